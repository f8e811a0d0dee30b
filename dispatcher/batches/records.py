"""Batch records in Redis: one hash a batch (its lease beside it, under its hash tag), a
sorted set of each tenant's batches for listing, and one of the batches being run, by
when their lease lapses (what a batch worker looks at to take up a dead one's batch).

Raw replies become :class:`BatchState` here and nowhere else. Status moves are atomic
(``lua/batch_status.lua``), so a worker finishing a batch and a caller cancelling it
cannot both win; only the lease holder writes a batch's progress.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from switchyard.broker.config import DEFAULT_TENANT
from switchyard.broker.keys import Keys
from switchyard.broker.scripts import Scripts
from switchyard.dispatcher.batches.errors import BatchNotFound

__all__ = ["ENDED", "STAMPS", "BatchRecords", "BatchState", "new_batch_id"]

ENDED = frozenset({"failed", "completed", "expired", "cancelled"})
STAMPS = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
          "cancelling_at", "cancelled_at")
"""The timestamps a batch gets as it moves (Unix seconds), as OpenAI names them."""
_INTS = ("created_at", "expires_at", "total", "completed", "failed", *STAMPS)


BATCH_ID = re.compile(r"^batch_[0-9a-f]{24}$")


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class BatchState:
    id: str
    tenant: str
    status: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    stamps: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    cost: dict[str, float] | None = None
    ending: str | None = None
    """While ``finalizing``: the status it ends in."""

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @classmethod
    def parse(cls, batch_id: str, raw: dict[str, str]) -> BatchState:
        ints = {name: int(raw[name]) for name in _INTS if raw.get(name)}
        return cls(
            id=batch_id, tenant=raw.get("tenant", DEFAULT_TENANT), status=raw["status"],
            endpoint=raw.get("endpoint", ""), input_file_id=raw.get("input_file_id", ""),
            completion_window=raw.get("completion_window", "24h"),
            created_at=ints.get("created_at", 0), expires_at=ints.get("expires_at", 0),
            metadata=json.loads(raw["metadata"]) if raw.get("metadata") else None,
            total=ints.get("total", 0), completed=ints.get("completed", 0),
            failed=ints.get("failed", 0), stamps={k: ints[k] for k in STAMPS if k in ints},
            output_file_id=raw.get("output_file_id") or None,
            error_file_id=raw.get("error_file_id") or None,
            errors=json.loads(raw["errors"]) if raw.get("errors") else [],
            usage=json.loads(raw["usage"]) if raw.get("usage") else None,
            cost=json.loads(raw["cost"]) if raw.get("cost") else None,
            ending=raw.get("ending") or None)


class BatchRecords:
    def __init__(self, redis: aioredis.Redis, keys: Keys, scripts: Scripts,
                 ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._ttl_ms = int(ttl_s * 1000)
        """A record outlives its batch's files by this (it is kept as long as they are)."""

    async def create(self, tenant: str | None, endpoint: str, input_file_id: str,
                     metadata: dict[str, str] | None, window_s: float) -> BatchState:
        batch_id, now = new_batch_id(), int(time.time())
        tenant = tenant or DEFAULT_TENANT
        raw: dict[str, str] = {"status": "validating", "tenant": tenant, "endpoint": endpoint,
               "input_file_id": input_file_id, "completion_window": "24h",
               "created_at": str(now), "expires_at": str(now + int(window_s))}
        if metadata:
            raw["metadata"] = json.dumps(metadata)
        key = self._keys.batch(batch_id)
        pipe = self._redis.pipeline(transaction=False)
        fields: Any = raw
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, self._ttl_ms + int(window_s * 1000))
        pipe.zadd(self._keys.batches_of(tenant), {batch_id: now * 1000})
        await pipe.execute()
        return BatchState.parse(batch_id, raw)

    async def get(self, batch_id: str, tenant: str | None = None) -> BatchState:
        """The batch (``BatchNotFound`` when there is none, or it is another tenant's;
        ``tenant=None``: a trusted caller, the batch worker)."""
        if not BATCH_ID.match(batch_id):  # (never a key built from a caller's text)
            raise BatchNotFound(f"no such batch: {batch_id!r}")
        reply: Any = await self._redis.hgetall(self._keys.batch(batch_id))
        raw = {str(k): str(v) for k, v in (reply or {}).items()}
        if not raw or (tenant is not None and raw.get("tenant") != tenant):
            raise BatchNotFound(f"no such batch: {batch_id!r}")
        return BatchState.parse(batch_id, raw)

    async def page(self, tenant: str | None, after: str | None, limit: int
                   ) -> tuple[list[BatchState], bool]:
        """The tenant's batches, newest first, after the batch ``after`` (its cursor);
        and whether there are more."""
        key = self._keys.batches_of(tenant or DEFAULT_TENANT)
        start = 0
        if after is not None:
            rank: Any = await self._redis.zrevrank(key, after)
            if rank is None:
                return [], False
            start = int(rank) + 1
        reply: Any = await self._redis.zrevrange(key, start, start + limit)
        ids = [str(i) for i in reply]
        found = []
        for batch_id in ids[:limit]:
            try:
                found.append(await self.get(batch_id, tenant or DEFAULT_TENANT))
            except BatchNotFound:  # expired: drop it from the list
                await self._redis.zrem(key, batch_id)
        return found, len(ids) > limit

    async def move(self, batch_id: str, allowed: str, status: str,
                   **fields: object) -> tuple[bool, str]:
        """Move the batch to ``status`` if it is in one of ``allowed`` (space-separated,
        '*': any), setting ``fields`` with it (values as text; dicts and lists as JSON);
        ``status=''`` sets the fields only. (moved, the status now)."""
        args: list[str | int | float] = [allowed, status, self._ttl_ms]
        for name, value in fields.items():
            args += [name, json.dumps(value) if isinstance(value, dict | list) else str(value)]
        reply = await self._scripts.call("batch_status", [self._keys.batch(batch_id)], args)
        assert isinstance(reply, list)
        return bool(int(reply[0])), str(reply[1])

    async def lease(self, batch_id: str, token: str, action: str, lease_ms: int) -> bool:
        """Take, renew or drop the batch's lease (see ``lua/batch_lease.lua``); on take and
        renew, the batch is listed as running until the lease would lapse."""
        done = await self._scripts.call("batch_lease", [self._keys.batch_lease(batch_id)],
                                        [token, action, lease_ms])
        if int(str(done)) and action != "drop":
            await self._redis.zadd(self._keys.batches_running,
                                   {batch_id: int(time.time() * 1000) + lease_ms})
        return bool(int(str(done)))

    async def lapse_now(self, batch_id: str) -> None:
        """List the batch as lapsed at once (its worker handed it back)."""
        await self._redis.zadd(self._keys.batches_running, {batch_id: 0})

    async def stop_running(self, batch_id: str) -> None:
        await self._redis.zrem(self._keys.batches_running, batch_id)

    async def lapsed(self) -> list[str]:
        """Batches listed as running whose lease has lapsed (their worker died)."""
        reply: Any = await self._redis.zrangebyscore(self._keys.batches_running, "-inf",
                                                     int(time.time() * 1000), start=0, num=100)
        found = []
        for batch_id in map(str, reply):
            if not await self._redis.exists(self._keys.batch_lease(batch_id)):
                found.append(batch_id)
        return found
