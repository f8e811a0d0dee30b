"""Background steps a worker repeats until it stops (heartbeat, spill step)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from switchyard.broker.errors import REDIS_FAILURES

__all__ = ["every"]

log = logging.getLogger(__name__)


async def every(interval_s: float, stop: asyncio.Event, step: Callable[[], Awaitable[object]],
                what: str) -> None:
    """Run ``step`` every ``interval_s`` until ``stop`` is set. A Redis error is logged and
    the next round tries again."""
    while not stop.is_set():
        try:
            await step()
        except REDIS_FAILURES as exc:
            log.warning("%s failed: %s", what, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
