"""Where a client's job goes: its model's route, the partition of its pool, and whether
that pool has a live worker (asked of Redis at most once a second)."""

from __future__ import annotations

import itertools
import time
import zlib

import redis.asyncio as aioredis

from switchyard.broker.config import ModelConfig, SwitchyardConfig
from switchyard.broker.keys import Keys, PartitionKeys
from switchyard.broker.schemas import now_ms
from switchyard.dispatcher.errors import InvalidRequest, UnknownModel

__all__ = ["Routing"]


class Routing:
    def __init__(self, config: SwitchyardConfig, keys: Keys, redis: aioredis.Redis) -> None:
        self._config = config
        self._keys = keys
        self._redis = redis
        self._round_robin = itertools.count()
        self._liveness: dict[str, tuple[float, bool]] = {}
        self._partitions: dict[tuple[str, int], PartitionKeys] = {}

    def route(self, model: str, kind: str) -> ModelConfig:
        route = self._config.models.get(model) if isinstance(model, str) else None
        if route is None:
            known = ", ".join(sorted(self._config.models)) or "none"
            raise UnknownModel(f"unknown model {model!r} (configured: {known})")
        if route.kind != kind:
            raise InvalidRequest(f"model {model!r} serves {route.kind} requests, not {kind}")
        return route

    def index(self, pool_name: str, idempotency_key: str | None) -> int:
        """The partition a job goes to: the same key always lands on the same one (to be
        found again); other jobs take turns."""
        count = self._config.pools[pool_name].partitions
        if count == 1:
            return 0
        if idempotency_key is not None:
            return zlib.crc32(idempotency_key.encode()) % count
        return next(self._round_robin) % count

    def partition(self, pool_name: str, idempotency_key: str | None) -> PartitionKeys:
        return self.partition_at(pool_name, self.index(pool_name, idempotency_key))

    def partition_at(self, pool_name: str, index: int) -> PartitionKeys:
        keys = self._partitions.get((pool_name, index))
        if keys is None:
            keys = self._partitions[pool_name, index] = self._keys.partition(pool_name, index)
        return keys

    def known_alive(self, pool_name: str) -> bool:
        """Whether :meth:`alive` found the pool alive within the last second."""
        cached = self._liveness.get(pool_name)
        return cached is not None and cached[1] and time.monotonic() - cached[0] < 1.0

    async def alive(self, pool_name: str) -> bool:
        """Whether any worker of the pool sent a heartbeat lately (checked once a second)."""
        now = time.monotonic()
        cached = self._liveness.get(pool_name)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        since = now_ms() - int(self._config.worker.heartbeat_ttl_s * 1000)
        alive = bool(await self._redis.zcount(self._keys.pool(pool_name).workers, since, "+inf"))
        self._liveness[pool_name] = (now, alive)
        return alive
