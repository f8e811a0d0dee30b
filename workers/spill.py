"""The spill step: jobs queued on a local pool past its ``wait_limit_s``, not yet taken by
any worker, move to the provider pool that is their model's ``overflow``. The bridge
workers of that provider pool run it, every ``interval_s``.

A job cannot change pools in place (its record and reply stream live in its pool's
partition), so it is forwarded: a copy is admitted on the provider pool as a new job that
answers on the same client's reply stream there; then, in one script on the original
partition (``spill_forward``), each entry still undelivered is deleted, its job marked
``forwarded`` to the copy, and its caller told on its reply stream, so the caller waits
for the copy. An entry a worker took in the meantime stays, and its copy is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from switchyard.broker.calls import StreamPolicy, cancel_call, enqueue_call
from switchyard.broker.config import DEFAULT_TENANT, SwitchyardConfig
from switchyard.broker.errors import EntryDecodeError
from switchyard.broker.keys import GROUP, JobIdSource, Keys, PartitionKeys
from switchyard.broker.schemas import PRIORITIES, decode_envelope, now_ms
from switchyard.broker.scripts import Scripts
from switchyard.broker.streams import StreamEntry, last_delivered, parse_stream_reply
from switchyard.workers.periodic import every

__all__ = ["Spiller"]

log = logging.getLogger(__name__)

BATCH = 100


class Spiller:
    def __init__(self, redis: aioredis.Redis, config: SwitchyardConfig, pool: str,
                 *, interval_s: float = 0.2) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)
        self._config = config
        self._keys = Keys(config.redis.prefix)
        self._targets = self._keys.partitions(pool, config.pools[pool].partitions)
        self._interval = interval_s
        self._ids = JobIdSource()
        self.origins = sorted({m.pool for m in config.models.values()
                               if m.overflow == pool and config.pools[m.pool].wait_limit_s})
        self.moved = 0

    async def run(self, stop: asyncio.Event) -> None:
        if self.origins:
            await every(self._interval, stop, self.spill_once, "spill step")

    async def spill_once(self) -> int:
        moved = 0
        for origin in self.origins:
            limit_s = self._config.pools[origin].wait_limit_s
            assert limit_s is not None
            for keys in self._keys.partitions(origin, self._config.pools[origin].partitions):
                for priority in PRIORITIES:
                    moved += await self._spill_stream(keys, keys.stream(priority), limit_s)
        self.moved += moved
        return moved

    async def _spill_stream(self, keys: PartitionKeys, stream: str, limit_s: float) -> int:
        last = await last_delivered(self._redis, stream, GROUP)
        cutoff = now_ms() - int(limit_s * 1000)
        if last is None or int(last.split("-")[0]) >= cutoff:
            return 0
        raw: Any = await self._redis.xrange(stream, min=f"({last}", max=str(cutoff), count=BATCH)
        entries = [e for e in parse_stream_reply([[stream, raw]]) if e.job_id and e.payload]
        copies = [self._copy(e) for e in entries]
        moving = [(e, c) for e, c in zip(entries, copies, strict=True) if c is not None]
        if not moving:
            return 0
        await self._admit([c for _, c in moving])
        verdicts = await self._forward(keys, stream, moving)
        kept = [c for (_, c), v in zip(moving, verdicts, strict=True) if v != "forwarded"]
        await self._cancel(kept)
        return len(moving) - len(kept)

    def _copy(self, entry: StreamEntry) -> _Copy | None:
        """The job's copy for the provider pool, or None if its entry cannot be read
        (the local pool's worker dead-letters it)."""
        try:
            envelope = decode_envelope(entry.payload)
        except EntryDecodeError:
            return None
        client = entry.reply.rpartition(":reply:")[2]
        target = self._targets[zlib.crc32(entry.job_id.encode()) % len(self._targets)]
        copy_id = self._ids.new(target.pool, target.partition)
        payload = envelope.model_copy(update={"id": copy_id}).model_dump_json()
        return _Copy(target, copy_id, target.reply(client), payload, envelope.priority,
                     envelope.tenant or DEFAULT_TENANT)

    async def _admit(self, copies: Sequence[_Copy]) -> None:
        ttl_ms = int(self._config.jobs.job_ttl_s * 1000)
        await self._scripts.pipeline([  # already admitted once: no cap applies again
            enqueue_call(StreamPolicy(c.keys.stream(c.priority), c.keys.drain(c.priority),
                                      cap=1 << 62, job_ttl_ms=ttl_ms),
                         c.reply, [(c.keys.job(c.id), None, c.id, c.payload, 0, 0)])
            for c in copies])

    async def _forward(self, keys: PartitionKeys, stream: str,
                       moving: Sequence[tuple[StreamEntry, _Copy]]) -> list[str]:
        jobs = self._config.jobs
        script_keys = [stream]
        args: list[str | int | float] = [GROUP, int(jobs.reply_ttl_s * 1000), jobs.reply_maxlen]
        for entry, copy in moving:
            script_keys += [keys.job(entry.job_id), entry.reply,
                            keys.tenant_jobs(copy.tenant, keys.priority_of(stream))]
            args += [entry.entry_id, entry.job_id, copy.id, copy.reply]
        reply = await self._scripts.call("spill_forward", script_keys, args)
        assert isinstance(reply, list)
        return [str(v) for v in reply]

    async def _cancel(self, copies: Sequence[_Copy]) -> None:
        await self._scripts.pipeline([
            cancel_call(c.keys.job(c.id), c.keys.stream(c.priority), c.reply,
                        c.keys.tenant_jobs("-", c.priority), c.id,
                        self._config.jobs, "the original ran on its own pool after all")
            for c in copies])


class _Copy:
    __slots__ = ("id", "keys", "payload", "priority", "reply", "tenant")

    def __init__(self, keys: PartitionKeys, job_id: str, reply: str, payload: str,
                 priority: Any, tenant: str) -> None:
        self.keys, self.id, self.reply, self.payload, self.priority, self.tenant = (
            keys, job_id, reply, payload, priority, tenant)
