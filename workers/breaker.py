"""Circuit breakers of provider targets, kept in Redis so every bridge process shares them
(``broker/lua/breaker_allow.lua``, ``breaker_record.lua``), plus the retry budget."""

from __future__ import annotations

import time
from dataclasses import dataclass

from switchyard.broker.config import BridgeConfig
from switchyard.broker.keys import Keys
from switchyard.broker.scripts import Scripts

__all__ = ["Breakers", "RetryBudget", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    probe: bool
    wait_s: float


class Breakers:
    """Each bridge asks Redis, but remembers a closed breaker for ``CACHE_S`` and sends its
    successes in bulk at most that often: a healthy target then costs no breaker round trip
    per call. Failures and half-open probes go to Redis at once (a failure first flushes
    the successes before it, so the failure rate is right), and another bridge's trip is
    seen within ``CACHE_S``."""

    CACHE_S = 0.25

    def __init__(self, scripts: Scripts, keys: Keys, policy: BridgeConfig) -> None:
        self._scripts = scripts
        self._keys = keys
        self._policy = policy
        self._closed_until: dict[str, float] = {}
        self._probing: set[str] = set()
        self._oks: dict[str, int] = {}
        self._flushed: dict[str, float] = {}

    async def allow(self, provider: str, model: str) -> Verdict:
        key = self._keys.breaker(provider, model)
        if time.monotonic() < self._closed_until.get(key, 0.0):
            return Verdict(True, False, 0.0)
        reply = await self._scripts.call("breaker_allow", [key],
                                         [int(self._policy.breaker_open_s * 1000)])
        assert isinstance(reply, list)
        verdict, ms = str(reply[0]), int(reply[1])
        if verdict == "allow":
            self._closed_until[key] = time.monotonic() + self.CACHE_S
        elif verdict == "probe":
            self._probing.add(key)
        return Verdict(verdict != "deny", verdict == "probe", ms / 1000)

    async def record(self, provider: str, model: str, outcome: str) -> str:
        """``outcome``: 'ok', 'fail' or 'fatal'; returns the breaker's state after it (for a
        success sent later in bulk: 'closed')."""
        key = self._keys.breaker(provider, model)
        now = time.monotonic()
        if outcome == "ok" and key not in self._probing:
            self._oks[key] = self._oks.get(key, 0) + 1
            if now - self._flushed.get(key, 0.0) < self.CACHE_S:
                return "closed"
        self._probing.discard(key)
        if outcome != "ok":
            self._closed_until.pop(key, None)
            if self._oks.get(key):
                await self._send(key, "ok", self._oks.pop(key))
        count = self._oks.pop(key, 1) if outcome == "ok" else 1
        self._flushed[key] = now
        return await self._send(key, outcome, count)

    async def _send(self, key: str, outcome: str, count: int) -> str:
        p = self._policy
        return str(await self._scripts.call(
            "breaker_record", [key],
            [outcome, int(p.breaker_window_s * 1000), p.breaker_min_calls,
             p.breaker_failure_rate, p.breaker_consecutive, int(p.breaker_open_s * 1000),
             int(p.breaker_max_open_s * 1000), count]))


class RetryBudget:
    """Retries allowed per first attempt (``ratio``), with a small reserve so a quiet bridge
    can still retry; an outage cannot multiply the calls by more than 1 + ratio. Per
    process: each bridge holds its own."""

    def __init__(self, ratio: float, reserve: float = 10.0) -> None:
        self._ratio = ratio
        self._cap = reserve
        self.tokens = reserve

    def first_attempt(self) -> None:
        self.tokens = min(self._cap, self.tokens + self._ratio)

    def retry(self) -> bool:
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
