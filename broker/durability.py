"""How a ``durable`` enqueue makes sure its job is on disk before it returns.

- Redis 7.2 or later: ``WAITAOF 1 0 <timeout>`` after the enqueue script, on the same
  connection (the script calls and WAITAOF share one pipeline), confirms that the local
  AOF was fsynced past the write.
- Older Redis has no WAITAOF. There the write is on disk when it is acknowledged only if
  the server runs with ``appendonly yes`` and ``appendfsync always``, which is checked
  (CONFIG GET) instead; ``switchyard up --durable`` starts Redis that way.

Anything else raises :class:`DurabilityUnavailable` before anything is enqueued. The
check's answer is kept for ``RECHECK_S``: a server reconfigured meanwhile is noticed late.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from switchyard.broker.errors import DurabilityUnavailable

__all__ = ["DurabilityProbe", "FsyncMode", "version_tuple", "waitaof_failure"]

RECHECK_S = 10.0

FsyncMode = Literal["waitaof", "always"]
"""``waitaof``: send WAITAOF after the writes; ``always``: every acknowledged write is
already fsynced."""


def version_tuple(text: str) -> tuple[int, ...]:
    """``"7.0.15"`` -> ``(7, 0, 15)``."""
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


@dataclass
class DurabilityProbe:
    """Finds, and remembers for ``RECHECK_S``, how this server makes writes durable."""

    redis: aioredis.Redis
    _mode: FsyncMode | None = None
    _checked: float = 0.0

    async def mode(self) -> FsyncMode:
        if self._mode is None or time.monotonic() - self._checked > RECHECK_S:
            self._mode = await self._find()
            self._checked = time.monotonic()
        return self._mode

    async def _find(self) -> FsyncMode:
        pipe = self.redis.pipeline(transaction=False)
        pipe.info("server")
        pipe.info("persistence")
        info, persistence = await pipe.execute()
        version = str(info.get("redis_version", "0"))
        if not int(persistence.get("aof_enabled", 0)):
            raise DurabilityUnavailable(
                f"durable enqueue needs the AOF, and this Redis ({version}) runs with "
                f"appendonly no")
        if version_tuple(version) >= (7, 2):
            return "waitaof"
        try:
            fsync: Any = await self.redis.config_get("appendfsync")
        except ResponseError as exc:
            raise DurabilityUnavailable(
                f"Redis {version} has no WAITAOF, and its appendfsync setting cannot be read "
                f"({exc}): durable enqueue cannot be confirmed") from exc
        if fsync.get("appendfsync") != "always":
            raise DurabilityUnavailable(
                f"Redis {version} has no WAITAOF (7.2+), and runs with appendfsync "
                f"{fsync.get('appendfsync')}: durable enqueue needs appendfsync always there "
                f"(switchyard up --durable)")
        return "always"


def waitaof_failure(reply: object) -> str | None:
    """Why WAITAOF's reply does not confirm the local AOF fsync (None when it does)."""
    if isinstance(reply, Exception):
        return f"WAITAOF failed ({reply})"
    if isinstance(reply, list) and reply and int(reply[0]) >= 1:
        return None
    return "Redis did not confirm the AOF fsync in time"
