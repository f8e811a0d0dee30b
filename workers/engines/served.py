"""The ``served`` engine: a worker in front of a local serving engine (vLLM, SGLang, TGI)
over its OpenAI-compatible API.

The queue stays in Redis, with its priorities, deadlines and failover: the worker pulls
only as many jobs as the engine has room for (:func:`~.engine_load.room`: its metrics,
scraped every ``scrape_ms``, and this worker's own count of what it has in flight and
has sent since the last reading), so the engine's own FIFO stays (nearly) empty and a
new interactive job goes ahead of batch work still in Redis. Each job is one streaming
request; text goes to the caller as it arrives, and a cancelled job closes its request
(the engine aborts it on the disconnect).

An engine that cannot be reached marks itself down: the jobs it could not take are
handed back to the queue without spending an attempt (:class:`Released`), nothing more
is sent until a scrape (or health check) answers again, and the heartbeat says so. That
health is this worker's own view of its own engine, never shared through Redis: a local
engine's outage says nothing about another host's. A job whose streamed text had begun
when the engine went away fails with ``stream_interrupted`` (its caller has part of an
answer; a replay would repeat it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import httpx

from switchyard.broker.config import PoolConfig, ProviderConfig
from switchyard.broker.schemas import ChatRequest, ChatResult, ErrorInfo, JobEnvelope, ServedBy
from switchyard.broker.schemas import Usage as UsageInfo
from switchyard.workers.engines.base import Emit, EngineOutput, Released
from switchyard.workers.engines.engine_load import EngineLoad, parse_metrics, room
from switchyard.workers.providers.base import ProviderError
from switchyard.workers.providers.openai import OpenAIProvider

__all__ = ["ServedEngine"]

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
"""For the job's cost only (its packing): the engine tokenises."""


class ServedEngine:
    name = "served"
    joins = True
    tokenises = False
    token_bytes = 0

    def __init__(self, pool: PoolConfig) -> None:
        self.settings = settings = pool.served
        self.model = settings.model or pool.model
        base = settings.url.rstrip("/")
        self.device = f"served:{base.split('://', 1)[-1]}"
        self._provider = OpenAIProvider(f"the serving engine at {base}", ProviderConfig(
            kind="openai-compatible", base_url=f"{base}/v1",
            connect_timeout_s=settings.connect_timeout_s,
            max_connections=settings.max_running + settings.max_waiting + 8))
        self._http = httpx.AsyncClient(base_url=base, timeout=settings.connect_timeout_s)
        self.load: EngineLoad | None = None
        self.healthy = True
        self._claimed: set[str] = set()
        self._answered: set[str] = set()
        self._sent = 0
        self._sent_at_reading = 0
        self._done = 0
        """Jobs whose answer came (or failed), ever; as of the last reading, below."""
        self._done_at_reading = 0
        self._job_tokens = 0.0
        """A moving average of the jobs' token bounds (prompt estimate + max tokens)."""
        self._scraping: asyncio.Task[None] | None = None

    @property
    def scrape_s(self) -> float:
        return self.settings.scrape_ms / 1000

    async def warmup(self) -> None:
        """Take a first reading, and keep reading every ``scrape_ms``."""
        await self.scrape()
        if self._scraping is None:
            self._scraping = asyncio.create_task(self._scrape_forever())

    def room(self) -> int:
        """Jobs to send the engine now (0 while it is down)."""
        if self._scraping is None:  # started by the first call on the worker's loop
            self._scraping = asyncio.create_task(self._scrape_forever())
        if not self.healthy:
            return 0
        return room(self.settings, self.load, self.inflight, self._sent - self._sent_at_reading,
                    self._job_tokens, self._done - self._done_at_reading)

    @property
    def inflight(self) -> int:
        """Jobs taken for the engine that it has not finished with (a job whose answer
        came counts no more, while the worker still writes its outcome)."""
        return len(self._claimed) - len(self._answered)

    def taken(self, jobs: Sequence[str]) -> None:
        self._claimed.update(jobs)
        self._sent += len(jobs)

    def settled(self, jobs: Sequence[str]) -> None:
        self._claimed.difference_update(jobs)
        self._answered.difference_update(jobs)

    def vitals(self) -> dict[str, str]:
        """The engine's load, for the heartbeat (``switchyard status`` shows it)."""
        load = self.load
        return {"engine_health": "up" if self.healthy else "down",
                "engine_inflight": str(self.inflight),
                "engine_running": "" if load is None else str(load.running),
                "engine_waiting": "" if load is None else str(load.waiting),
                "engine_kv": "" if load is None else f"{load.kv:.2f}"}

    async def scrape(self) -> None:
        """One reading of the engine's metrics (or its health, without metrics)."""
        sent, done = self._sent, self._done
        path = "/health" if self.settings.metrics == "none" else self.settings.metrics_path
        try:
            response = await self._http.get(path)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self._set_health(False, f"{type(exc).__name__}: {exc}")
            return
        if self.settings.metrics != "none":
            self.load = parse_metrics(response.text, self.settings.metrics)
        self._sent_at_reading, self._done_at_reading = sent, done
        self._set_health(True, "")

    async def _scrape_forever(self) -> None:
        while True:
            await asyncio.sleep(self.scrape_s)
            await self.scrape()

    def _set_health(self, healthy: bool, why: str) -> None:
        if healthy != self.healthy:
            if healthy:
                log.info("serving engine %s is back", self.device)
            else:
                log.warning("serving engine %s is down (%s): handing jobs back, sending "
                            "nothing until it answers", self.device, why)
        self.healthy = healthy

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        request = job.request
        assert isinstance(request, ChatRequest)
        chars = sum(len(m.content) for m in request.messages)
        return 1, chars // CHARS_PER_TOKEN + request.max_tokens

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        return list(await asyncio.gather(*(self._one(i, job, served_by, emit)
                                            for i, job in enumerate(jobs))))

    async def _one(self, index: int, job: JobEnvelope, served_by: ServedBy,
                   emit: Emit) -> EngineOutput:
        request = job.request
        if not isinstance(request, ChatRequest):
            return ErrorInfo(code="bad_request", message="a served pool takes chat requests")
        if not self.healthy:
            return Released(code="engine_down", message=f"{self.device} is down")
        first: list[int] = []

        def on_text(text: str) -> bool:
            if not first:
                first.append(time.time_ns() // 1_000_000)
            return emit(index, text)

        params: dict[str, object] = {"max_tokens": request.max_tokens,
                                     "temperature": request.temperature,
                                     "top_p": request.top_p}
        if request.stop:
            params["stop"] = request.stop
        if request.seed is not None:
            params["seed"] = request.seed
        tokens = self.cost(job)[1]
        self._job_tokens = tokens if not self._job_tokens else (
            0.9 * self._job_tokens + 0.1 * tokens)
        try:
            done = await self._provider.chat(self.model, request.messages, params, on_text,
                                             self.settings.first_token_timeout_s)
        except ProviderError as exc:
            return self._failed(exc, request.stream and bool(first))
        finally:
            if job.id in self._claimed:
                self._answered.add(job.id)
                self._done += 1
        return ChatResult(
            text=done.text, finish_reason="length" if done.finish_reason == "length" else "stop",
            usage=UsageInfo(input_tokens=done.input_tokens, output_tokens=done.output_tokens),
            ttft_ms=float(max(0, first[0] - job.created_ms)) if first else None,
            served_by=served_by)

    def _failed(self, exc: ProviderError, streamed: bool) -> EngineOutput:
        """Unreachable (or restarting: 502-504): down, the job handed back. Anything
        else the engine answered is this job's own error."""
        if exc.status is None or exc.status in (502, 503, 504):
            self._set_health(False, str(exc))
            if streamed:
                return ErrorInfo(code="stream_interrupted",
                                 message=f"the serving engine went away mid-answer: {exc}")
            return Released(code="engine_down", message=str(exc))
        code = "bad_request" if exc.status in (400, 404, 422) else "engine_error"
        return ErrorInfo(code=code, message=str(exc))

    async def aclose(self) -> None:
        if self._scraping is not None:
            self._scraping.cancel()
        await self._provider.aclose()
        await self._http.aclose()
