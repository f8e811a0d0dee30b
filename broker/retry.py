"""Retrying Redis: one exponential backoff, and "retry until it lands", for every role.

Workers must not drop writes of work they hold (outcomes, deltas, re-queues), and every
reader reconnects after Redis went away; all of them wait the same way between tries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from switchyard.broker.errors import REDIS_FAILURES

__all__ = ["Backoff", "until_done"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Backoff:
    """Delays between tries: ``first``, doubling up to ``most``; ``reset`` after a success."""

    first: float = 0.1
    most: float = 1.0
    """Enough to ride out a restart without long gaps after Redis is back."""
    _delay: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._delay = min(self.most, self._delay * 2) if self._delay else self.first
        return self._delay

    def reset(self) -> None:
        self._delay = 0.0


async def until_done(op: Callable[[], Awaitable[T]], what: str,
                     backoff: Backoff | None = None) -> T:
    """``op()``, tried again after each Redis error (logged) until it succeeds."""
    backoff = backoff or Backoff()
    while True:
        try:
            return await op()
        except REDIS_FAILURES as exc:
            delay = backoff.next()
            log.warning("%s failed: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
