"""Circuit breakers of provider targets, kept in Redis so every bridge process shares them
(``broker/lua/breaker_allow.lua``, ``breaker_record.lua``), plus the retry budget."""

from __future__ import annotations

from dataclasses import dataclass

from broker.config import BridgeConfig
from broker.keys import Keys
from broker.scripts import Scripts

__all__ = ["Breakers", "RetryBudget", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    probe: bool
    wait_s: float


class Breakers:
    def __init__(self, scripts: Scripts, keys: Keys, policy: BridgeConfig) -> None:
        self._scripts = scripts
        self._keys = keys
        self._policy = policy

    async def allow(self, provider: str, model: str) -> Verdict:
        reply = await self._scripts.call("breaker_allow", [self._keys.breaker(provider, model)],
                                         [int(self._policy.breaker_open_s * 1000)])
        assert isinstance(reply, list)
        verdict, ms = str(reply[0]), int(reply[1])
        return Verdict(verdict != "deny", verdict == "probe", ms / 1000)

    async def record(self, provider: str, model: str, outcome: str) -> str:
        """``outcome``: 'ok', 'fail' or 'fatal'; returns the breaker's state after it."""
        p = self._policy
        return str(await self._scripts.call(
            "breaker_record", [self._keys.breaker(provider, model)],
            [outcome, int(p.breaker_window_s * 1000), p.breaker_min_calls,
             p.breaker_failure_rate, p.breaker_consecutive, int(p.breaker_open_s * 1000),
             int(p.breaker_max_open_s * 1000)]))


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
