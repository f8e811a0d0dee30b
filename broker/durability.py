"""How a ``durable`` enqueue makes sure its job is on disk before it returns.

- Redis 7.2 or later: ``WAITAOF 1 0 <timeout>`` after the enqueue script, on the same
  connection (the script calls and WAITAOF share one pipeline), confirms that the local
  AOF was fsynced past the write.
- Older Redis has no WAITAOF. There the write is on disk when it is acknowledged only if
  the server runs with ``appendonly yes`` and ``appendfsync always``, which is checked
  (CONFIG GET) instead; ``switchyard up --durable`` starts Redis that way.

On a Redis Cluster every master is checked, and a durable enqueue also waits for a
replica to acknowledge it (``WAIT 1``), so the job survives its master's loss.

Anything else raises :class:`DurabilityUnavailable` before anything is enqueued. The
check's answer is kept for ``RECHECK_S``: a server reconfigured meanwhile is noticed late.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ResponseError

from switchyard.broker.errors import DurabilityUnavailable
from switchyard.broker.settings import is_cluster

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

    async def waits(self) -> bool:
        """Whether a durable write needs a wait after it, on its own connection: WAITAOF
        (Redis 7.2+), or on a cluster WAIT 1 for a replica (and WAITAOF where there is
        one). Raises :class:`DurabilityUnavailable` where no durable write can be made."""
        return await self.mode() == "waitaof" or is_cluster(self.redis)

    async def _find(self) -> FsyncMode:
        if not is_cluster(self.redis):
            return await self._find_on(None)
        # a cluster: every master must make its writes durable (any may take a job)
        cluster = cast(aioredis.RedisCluster, self.redis)
        modes = {await self._find_on(node) for node in cluster.get_primaries()}
        return "always" if "always" in modes else "waitaof"

    async def _find_on(self, node: ClusterNode | None) -> FsyncMode:
        """The mode of the server (None), or of one node of a cluster."""
        where = {} if node is None else {"target_nodes": node}
        ask = cast(Callable[..., Awaitable[Any]], self.redis.execute_command)
        info = await ask("INFO", "server", **where)
        persistence = await ask("INFO", "persistence", **where)
        version = str(info.get("redis_version", "0"))
        if node is not None:
            replication = await ask("INFO", "replication", **where)
            if int(replication.get("connected_slaves", 0)) < 1:
                raise DurabilityUnavailable(
                    f"the cluster's master at {node.name} has no replica connected: a "
                    f"durable enqueue on a cluster waits for one (WAIT 1)")
        if not int(persistence.get("aof_enabled", 0)):
            raise DurabilityUnavailable(
                f"durable enqueue needs the AOF, and this Redis ({version}) runs with "
                f"appendonly no")
        if version_tuple(version) >= (7, 2):
            return "waitaof"
        try:
            fsync: Any = await ask("CONFIG GET", "appendfsync", **where)
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
