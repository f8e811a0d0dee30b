"""The watchdog (`switchyard watchdog`): puts back the work of consumers that died or hung.

Every ``interval_s``, for every priority stream of every pool:

- a consumer holding pending entries whose heartbeat key has expired is dead: its
  entries are re-queued at once (``lua/requeue.lua``: re-added with attempts + 1 and the
  original creation time and deadline, or past ``max_attempts`` dead-lettered with their
  job failed), and it is removed from the group once it holds nothing;
- an entry pending longer than ``reclaim_idle_s`` on a consumer that still beats (hung,
  not dead) is claimed with XAUTOCLAIM and re-queued the same way;
- the oldest undelivered entries (``BATCH`` per stream) whose deadline has passed end
  as ``expired`` (``lua/expire.lua``), so a pool with no live worker still answers its
  callers at their deadlines;
- dead letters older than ``dead_letter_max_age_s`` are trimmed (XTRIM MINID).

Re-queued entries whose deadline has passed expire instead of running again.

Several watchdogs may run at once: each entry is re-queued by one script call that
finds it gone if another got there first. A job re-queued while its first worker still
runs it ends once: the first result wins, and the later one is counted, not delivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.eviction import check_eviction_policy
from switchyard.broker.keys import GROUP, Keys, PartitionKeys, PoolKeys
from switchyard.broker.schemas import now_ms
from switchyard.broker.scripts import Scripts
from switchyard.broker.streams import (
    StreamEntry,
    deadline_of,
    last_delivered,
    parse_autoclaim,
    parse_stream_reply,
    pending_of,
    read_entries,
)
from switchyard.workers.ledger import expire_call, requeue_call
from switchyard.workers.periodic import every

__all__ = ["Watchdog", "WatchdogStats"]

log = logging.getLogger(__name__)

BATCH = 200


@dataclass
class WatchdogStats:
    requeued: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    """Entries taken back from hung consumers (also counted as requeued or dead)."""
    consumers_removed: int = 0
    expired: int = 0
    """Jobs ended because their deadline passed while they waited (or were re-queued)."""


class Watchdog:
    def __init__(self, redis: aioredis.Redis, config: SwitchyardConfig) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)
        self._config = config
        self._keys = Keys(config.redis.prefix)
        self.consumer = f"watchdog-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stats = WatchdogStats()

    async def run(self, stop: asyncio.Event) -> None:
        await check_eviction_policy(self._redis, "the watchdog's server")
        await every(self._config.watchdog.interval_s, stop, self.sweep, "watchdog sweep")

    async def sweep(self) -> None:
        for name, pool in self._config.pools.items():
            pool_keys = self._keys.pool(name)
            for keys in self._keys.partitions(name, pool.partitions):
                for stream in keys.streams():
                    await self._dead_consumers(pool_keys, keys, stream)
                    await self._hung_entries(keys, stream)
                    await self._expire_waiting(keys, stream)
                await self._trim_dead_letters(keys)

    async def _expire_waiting(self, keys: PartitionKeys, stream: str) -> None:
        """End the oldest undelivered jobs whose deadline passed (checked again, on the
        Redis clock, by the script)."""
        after = await last_delivered(self._redis, stream, GROUP)
        if after is None:
            return
        raw = await self._redis.xrange(stream, min=f"({after}" if after != "0-0" else "-",
                                       count=BATCH)
        now = now_ms()
        late = [e for e in parse_stream_reply([[stream, raw]]) if raw
                if (d := deadline_of(e.payload)) is not None and d < now]
        if not late:
            return
        reply = await self._scripts.call(*expire_call(self._config, keys, stream, late))
        assert isinstance(reply, list)
        self.stats.expired += reply.count("expired")

    async def _trim_dead_letters(self, keys: PartitionKeys) -> None:
        oldest = now_ms() - int(self._config.watchdog.dead_letter_max_age_s * 1000)
        await self._redis.xtrim(keys.dead, minid=f"{max(0, oldest)}-0", approximate=False)

    async def _dead_consumers(self, pool: PoolKeys, keys: PartitionKeys, stream: str) -> None:
        try:
            consumers: Any = await self._redis.xinfo_consumers(stream, GROUP)
        except aioredis.ResponseError:
            return  # no stream or group yet
        names = [str(c["name"]) for c in consumers]
        if not names:
            return
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(pool.worker(name))
        alive = await pipe.execute()
        for consumer, info, beating in zip(names, consumers, alive, strict=True):
            if beating:
                continue
            if int(info.get("pending", 0)):
                why = f"its worker {consumer} stopped (no heartbeat)"
                for_consumer = await pending_of(self._redis, stream, GROUP, consumer,
                                                count=BATCH)
                await self._requeue(keys, stream, [p.entry_id for p in for_consumer], why)
            elif consumer != self.consumer and await self._scripts.call(
                    "forget", [stream], [GROUP, consumer]):  # still nothing pending
                self.stats.consumers_removed += 1

    async def _hung_entries(self, keys: PartitionKeys, stream: str) -> None:
        idle_ms = int(self._config.watchdog.reclaim_idle_s * 1000)
        try:
            raw: Any = await self._redis.execute_command(  # type: ignore[no-untyped-call]
                "XAUTOCLAIM", stream, GROUP, self.consumer, idle_ms, "0-0", "COUNT", BATCH)
        except aioredis.ResponseError:
            return
        claim = parse_autoclaim(stream, raw)
        ids = [e.entry_id for e in claim.claimed]
        if claim.claimed_deleted:  # Redis 6.2: deleted entries now pending on us, unnamed
            mine = await pending_of(self._redis, stream, GROUP, self.consumer, count=BATCH)
            ids = sorted({*ids, *(p.entry_id for p in mine)})
        if ids:
            self.stats.reclaimed += len(claim.claimed)
            why = f"no progress for {self._config.watchdog.reclaim_idle_s:g} s"
            await self._requeue(keys, stream, ids, why, claim.claimed)

    async def _requeue(self, keys: PartitionKeys, stream: str, ids: Sequence[str],
                       why: str, known: Sequence[StreamEntry] = ()) -> None:
        """Re-queue (or dead-letter) these entries of one stream, in one script call;
        entries not ``known`` already are read first (their job and reply stream are
        among the script's keys)."""
        if not ids:
            return
        found = {e.entry_id: e for e in known}
        found |= await read_entries(self._redis, stream, [i for i in ids if i not in found])
        reply = await self._scripts.call(*requeue_call(self._config, keys, stream, ids, found,
                                                       "attempts_exhausted", why))
        assert isinstance(reply, list)
        for entry_id, verdict in zip(ids, reply, strict=True):
            if verdict == "requeued":
                self.stats.requeued += 1
            elif verdict == "dead":
                self.stats.dead_lettered += 1
            elif verdict == "expired":
                self.stats.expired += 1
            log.info("%s %s: %s (%s)", stream, entry_id, verdict, why)
