"""Provider rate limits shared by every bridge process (``broker/lua/ratelimit_*.lua``):
configured requests and tokens per minute, and pauses the providers themselves announce
in their rate-limit headers (OpenAI ``x-ratelimit-*``, Anthropic ``anthropic-ratelimit-*``),
so calls slow down before a 429, not only after one."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from switchyard.broker.config import ProviderConfig
from switchyard.broker.keys import Keys
from switchyard.broker.scripts import Scripts

__all__ = ["RateLimits", "announced_pause"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PAIRS = [
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
    ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    ("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"),
    ("anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"),
]


def _reset_s(raw: str) -> float | None:
    """'1s', '6m0s', '20ms' (OpenAI) or an RFC 3339 time (Anthropic) -> seconds from now."""
    parts = _DURATION.findall(raw)
    if parts and "".join(n + u for n, u in parts) == raw.strip():
        return sum(float(n) * _SECONDS[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def announced_pause(headers: Mapping[str, str]) -> float:
    """Seconds to hold calls to a provider whose headers say a limit is used up (0: none)."""
    pause = 0.0
    for remaining, reset in _PAIRS:
        left, when = headers.get(remaining), headers.get(reset)
        if left is None or when is None:
            continue
        try:
            exhausted = float(left) <= 0
        except ValueError:
            continue
        seconds = _reset_s(when) if exhausted else None
        if seconds:
            pause = max(pause, seconds)
    return pause


class RateLimits:
    CACHE_S = 0.25
    """A provider with no RPM/TPM of ours is only checked for announced pauses, and a
    clear answer is remembered this long (another bridge's pause is seen that late)."""

    def __init__(self, scripts: Scripts, keys: Keys,
                 providers: Mapping[str, ProviderConfig]) -> None:
        self._scripts = scripts
        self._keys = keys
        self._providers = providers
        self._clear_until: dict[str, float] = {}
        self._paused_until: dict[str, float] = {}

    async def take(self, provider: str, tokens: int) -> float:
        """0 if a call of about ``tokens`` may go now (its share is taken), else the
        seconds to wait."""
        now = time.monotonic()
        paused = self._paused_until.get(provider, 0.0) - now
        if paused > 0:
            return paused
        config = self._providers[provider]
        unlimited = not config.rpm and not config.tpm
        if unlimited and now < self._clear_until.get(provider, 0.0):
            return 0.0
        wait = int(str(await self._scripts.call(
            "ratelimit_take", [self._keys.rate_limit(provider)],
            [config.rpm, config.tpm, tokens, config.burst_s]))) / 1000
        if unlimited and wait <= 0:
            self._clear_until[provider] = now + self.CACHE_S
        return wait

    async def pause(self, provider: str, seconds: float) -> None:
        if seconds > 0:
            self._paused_until[provider] = time.monotonic() + seconds
            self._clear_until.pop(provider, None)
            await self._scripts.call("ratelimit_observe", [self._keys.rate_limit(provider)],
                                     [int(seconds * 1000)])
