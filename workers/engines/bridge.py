"""The ``bridge`` engine: serves a provider pool by calling external LLM APIs.

Every job of a batch runs concurrently (and, since the engine ``joins``, the worker keeps
pulling while they run), so one process keeps many requests in flight. A job walks the
pool's targets in order, at most ``max_attempts`` calls in all:

- a target whose breaker is open is skipped (it costs no attempt);
- 408/409/429/5xx/529, connection errors, timeouts, and streams that fail before their
  first token move on to the next target; coming back to a target waits for its
  Retry-After and a full-jitter backoff;
- 400/401/403/404 and quota errors are not retried on that target (401/403 also open its
  breaker at once, and are logged as errors);
- a stream that fails after text reached the caller ends the job with
  ``stream_interrupted``: never a success with partial text;
- moving on to a target this job has not called yet is failover, not a retry; calling a
  target again is a retry and spends the retry budget (so an outage never multiplies the
  load on the provider that has it); with none left, or past the job's deadline, the
  job fails with ``providers_failed`` naming what each target said.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from switchyard.broker.config import PoolConfig, ProviderConfig, TargetConfig
from switchyard.broker.keys import Keys
from switchyard.broker.schemas import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    ErrorInfo,
    JobEnvelope,
    ServedBy,
    Usage,
)
from switchyard.broker.scripts import Scripts
from switchyard.workers.breaker import Breakers, RetryBudget
from switchyard.workers.engines.base import Emit, EngineOutput
from switchyard.workers.providers import ProviderError, build_provider
from switchyard.workers.providers.base import api_key
from switchyard.workers.providers.scrub import Scrubber
from switchyard.workers.ratelimit import RateLimits

__all__ = ["BridgeEngine"]

log = logging.getLogger(__name__)


class BridgeEngine:
    name = "bridge"
    device = "providers"
    token_bytes = 0
    joins = True
    tokenises = False

    def __init__(self, pool: PoolConfig, providers: dict[str, ProviderConfig],
                 scripts: Scripts, keys: Keys) -> None:
        self._targets = pool.targets
        self._policy = pool.bridge
        self._providers = {t.provider: build_provider(t.provider, providers[t.provider])
                           for t in pool.targets}
        self._scrub = Scrubber(api_key(c) for c in providers.values())
        self._breakers = Breakers(scripts, keys, pool.bridge)
        self._limits = RateLimits(scripts, keys, providers)
        self.budget = RetryBudget(pool.bridge.retry_ratio)

    async def warmup(self) -> None:
        return None

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        return 1, 1

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        return list(await asyncio.gather(*(self._job(i, job, served_by, emit)
                                            for i, job in enumerate(jobs))))

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    async def _job(self, index: int, job: JobEnvelope, served_by: ServedBy,
                   emit: Emit) -> EngineOutput:
        deadline = None if job.deadline_ms is None else job.deadline_ms / 1000
        self.budget.first_attempt()
        failures: list[str] = []
        done_with: set[int] = set()  # targets not to call again for this job
        called: set[int] = set()
        not_before: dict[int, float] = {}
        attempts = 0
        while attempts < self._policy.max_attempts:
            choice = await self._next_target(job, done_with, called, not_before, deadline)
            if choice is None:
                break
            number, target = choice
            if number in called and not self.budget.retry():
                failures.append("retry budget exhausted")
                break
            called.add(number)
            attempts += 1
            try:
                return await self._call(target, job, served_by, lambda t: emit(index, t),
                                        deadline)
            except ProviderError as exc:
                exc.args = (self._scrub(str(exc)),)  # before it is stored, logged or returned
                failures.append(str(exc))
                await self._record(target, exc)
                if exc.after_text:
                    return ErrorInfo(code="stream_interrupted",
                                     message=f"the reply broke off after text was sent: {exc}")
                if not exc.retry_elsewhere:
                    done_with.add(number)
                delay = self._policy.backoff_s * 2 ** (attempts - 1) * random.random()
                not_before[number] = time.time() + max(exc.retry_after or 0.0, delay)
        return ErrorInfo(code="providers_failed", message="; ".join(failures)
                         or "every target's circuit breaker is open")

    async def _next_target(self, job: JobEnvelope, done_with: set[int], called: set[int],
                           not_before: dict[int, float],
                           deadline: float | None) -> tuple[int, TargetConfig] | None:
        """The first target that may be called now: allowed by its breaker, past its
        Retry-After and backoff, and within its provider's rate limits (whose share it
        then takes); those this job has not called yet first (failover before retries).
        If every one left must wait, wait for the soonest (unless that passes the
        deadline) and look again."""
        tokens = _estimate_tokens(job)
        first = self._weighted_first() if not called else None
        while True:
            waiting: list[float] = []
            for number in sorted(range(len(self._targets)),
                                 key=lambda n: (n in called, n != first, n)):
                target = self._targets[number]
                if number in done_with:
                    continue
                if not (await self._breakers.allow(target.provider, target.model)).allowed:
                    continue
                ready = not_before.get(number, 0.0)
                if ready <= time.time():
                    wait = await self._limits.take(target.provider, tokens)
                    if wait <= 0:
                        return number, target
                    ready = not_before[number] = time.time() + wait
                waiting.append(ready)
            if not waiting or (deadline is not None and min(waiting) >= deadline):
                return None
            await asyncio.sleep(max(0.0, min(waiting) - time.time()))

    def _weighted_first(self) -> int | None:
        """A target drawn by weight among those with one (None: keep the route's order)."""
        weights = [t.weight for t in self._targets]
        if not any(weights):
            return None
        return random.choices(range(len(weights)), weights)[0]

    async def _call(self, target: TargetConfig, job: JobEnvelope, served_by: ServedBy,
                    on_text: Any, deadline: float | None) -> EngineOutput:
        provider = self._providers[target.provider]
        limit = target.timeout_s
        if deadline is not None:
            limit = min(limit, deadline - time.time())
            if limit <= 0:
                raise ProviderError("deadline passed", retry_elsewhere=False)
        by = served_by.model_copy(update={"provider": target.provider, "model": target.model})
        request = job.request
        try:
            async with asyncio.timeout(limit):
                if isinstance(request, EmbedRequest):
                    vectors, tokens = await provider.embed(target.model, request.input)
                    result: EngineOutput = EmbedResult(
                        vectors=vectors, dimensions=len(vectors[0]) if vectors else 0,
                        usage=Usage(input_tokens=tokens), served_by=by,
                        cost_usd=_cost(target, tokens, 0))
                else:
                    result = await self._chat(provider, target, job, request, by, on_text)
        except TimeoutError:
            raise ProviderError(f"{target.provider} took longer than {limit:.1f}s",
                                retry_elsewhere=True) from None
        await self._breakers.record(target.provider, target.model, "ok")
        return result

    async def _chat(self, provider: Any, target: TargetConfig, job: JobEnvelope,
                    request: ChatRequest, by: ServedBy, on_text: Any) -> ChatResult:
        params: dict[str, Any] = {"max_tokens": request.max_tokens,
                                  "temperature": request.temperature, "top_p": request.top_p}
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        first: list[float] = []

        def text(piece: str) -> bool:
            if not first:
                first.append(time.time())
            return bool(on_text(piece))

        done = await provider.chat(target.model, request.messages, params, text,
                                   target.first_token_timeout_s)
        await self._limits.pause(target.provider, done.pause_s)
        ttft = (first[0] * 1000 - job.created_ms) if first else None
        return ChatResult(text=done.text, finish_reason="length" if done.finish_reason == "length"
                          else "stop", usage=Usage(input_tokens=done.input_tokens,
                                                   output_tokens=done.output_tokens),
                          ttft_ms=ttft, served_by=by,
                          cost_usd=_cost(target, done.input_tokens, done.output_tokens))

    async def _record(self, target: TargetConfig, exc: ProviderError) -> None:
        await self._limits.pause(target.provider, exc.pause_s)
        if exc.bad_key:
            log.error("%s rejected its API key (HTTP %s): target %s is off until its breaker "
                      "half-opens", target.provider, exc.status, target.model)
        outcome = "fatal" if exc.bad_key else "fail" if exc.retry_elsewhere else "ok"
        state = await self._breakers.record(target.provider, target.model, outcome)
        if state == "open" and outcome != "ok":
            log.warning("breaker for %s/%s is open: %s", target.provider, target.model, exc)


def _estimate_tokens(job: JobEnvelope) -> int:
    """What a call may use of a tokens-per-minute limit: about 4 characters a token of
    input, plus the output asked for."""
    request = job.request
    if isinstance(request, ChatRequest):
        return sum(len(m.content) for m in request.messages) // 4 + 1 + request.max_tokens
    return sum(len(t) for t in request.input) // 4 + 1


def _cost(target: TargetConfig, tokens_in: int, tokens_out: int) -> float:
    return round((tokens_in * target.price_in + tokens_out * target.price_out) / 1e6, 8)
