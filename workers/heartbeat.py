"""A worker's heartbeat: a hash with a TTL describing it, and its score in the pool's
registry of live workers (what `switchyard status` counts)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

import redis.asyncio as aioredis

from switchyard.broker.config import PoolConfig
from switchyard.broker.keys import PoolKeys
from switchyard.broker.schemas import now_ms
from switchyard.broker.scripts import Scripts
from switchyard.workers.periodic import every

__all__ = ["Heartbeat", "describe"]

log = logging.getLogger(__name__)


def describe(engine: str, device: str, pool: PoolConfig) -> dict[str, str]:
    """What a worker's heartbeat says about it, besides its vitals."""
    if pool.engine == "echo":
        model = "echo"
    elif pool.engine == "bridge":
        model = ", ".join(f"{t.provider}/{t.model}" for t in pool.targets)
    else:
        model = pool.model
    return {"engine": engine, "device": device, "pid": str(os.getpid()),
            "host": socket.gethostname(), "max_batch": str(pool.max_batch), "model": model}


class Heartbeat:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: PoolKeys,
        consumer: str,
        info: dict[str, str],
        *,
        interval_s: float,
        ttl_s: float,
        refresh: Callable[[], dict[str, str]] | None = None,
        scripts: Scripts | None = None,
    ) -> None:
        self._redis = redis
        self._scripts = scripts or Scripts(redis)
        self._keys = keys
        self._consumer = consumer
        self.info = dict(info)
        self._interval = interval_s
        self._ttl_ms = int(ttl_s * 1000)
        self._refresh = refresh

    async def beat(self) -> None:
        """Publish ``info`` (updated by ``refresh`` first, if given). A refresh that fails
        (an NVML error, say) is logged and the beat goes out with the last vitals: a
        worker that stopped beating would be taken for dead and its work re-queued."""
        if self._refresh is not None:
            try:
                self.info.update(self._refresh())
            except Exception as exc:
                log.warning("heartbeat: vitals not refreshed: %s: %s", type(exc).__name__, exc)
        fields = [v for pair in self.info.items() for v in pair]
        await self._scripts.call("beat", [self._keys.worker(self._consumer), self._keys.workers],
                                 [self._consumer, self._ttl_ms, now_ms(), *fields])

    async def run(self, stop: asyncio.Event) -> None:
        await every(self._interval, stop, self.beat, "heartbeat")

    async def remove(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._keys.workers, self._consumer)
        pipe.delete(self._keys.worker(self._consumer))
        await pipe.execute()
