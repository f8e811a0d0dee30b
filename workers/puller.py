"""Reads a pool's priority streams into a local carry-over buffer, and packs batches.

Entries read but not yet started stay in the buffer, still pending on this consumer in
Redis, so nothing is lost if the worker dies; the next batch serves them first. A batch
is bounded by ``max_batch`` jobs and ``max_batch_tokens`` padded tokens (texts x longest).

When the buffer is empty the puller blocks on every stream (XREADGROUP BLOCK); otherwise
it tops the buffer up with ``lua/hold.lua``, which reads and records the jobs as *held*
at once. A held job is not charged an attempt if this worker
dies before starting it, so a held job runs only once ``start`` has landed; one from the
blocking read counts as started when read, so its ``start`` may overlap the engine (the
light-load path costs no extra round trip). What the blocking read brought beyond the
batch the worker runs first is held (:meth:`Puller.hold_rest`) before the next batch is taken.

On a Redis Cluster one command reads one slot, so with several partitions the puller
keeps one blocking read per partition outstanding, each on the node that holds it, and
takes whichever answer first (and any others that have answered by then); a read still
blocked carries over to the next fill, and shutdown waits for it (:meth:`Puller.quiesce`),
so nothing it brings is left unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from switchyard.broker.config import ENGINE_KINDS, SwitchyardConfig
from switchyard.broker.errors import EntryDecodeError
from switchyard.broker.keys import GROUP, PartitionKeys
from switchyard.broker.nodes import at_node, command
from switchyard.broker.schemas import PRIORITIES, JobEnvelope, Priority, decode_envelope, now_ms
from switchyard.broker.scripts import ScriptCall, Scripts
from switchyard.broker.settings import is_cluster
from switchyard.broker.streams import StreamEntry, parse_stream_reply
from switchyard.broker.wire import Wire
from switchyard.workers.scheduler import PriorityScheduler

__all__ = ["Pulled", "Puller"]


@dataclass(slots=True)
class Pulled:
    """A stream entry this worker holds, decoded (``envelope``) or not (``error``).

    ``held``: recorded in Redis as read ahead, not started (see the module doc).
    ``owned``: the entry's job id names the partition it was read from (only then is it
    used to build keys or spliced into an outcome); ``reply_owned``: likewise its reply
    stream. ``cost``: the engine's (texts, tokens) estimate, once asked for. Treat as
    read-only; not ``frozen``, because one is built per job and frozen ones build slowly.
    """

    entry: StreamEntry
    keys: PartitionKeys
    priority: Priority
    envelope: JobEnvelope | None
    error: str | None = None
    held: bool = False
    owned: bool = field(init=False)
    reply_owned: bool = field(init=False)
    cost: tuple[int, int] | None = field(init=False, default=None)
    deadline: int = field(init=False)
    """The envelope's start deadline (epoch ms), 0 when none (or undecoded)."""
    job_key: str = field(init=False)
    """Its job's hash (a placeholder's when not ``owned``)."""

    def __post_init__(self) -> None:
        self.owned = self.keys.owns(self.entry.job_id)
        self.job_key = self.keys.job(self.entry.job_id if self.owned else "-")
        self.reply_owned = self.keys.owns_reply(self.entry.reply)
        self.deadline = (self.envelope.deadline_ms or 0) if self.envelope is not None else 0

    def admitted_ms(self) -> int:
        """When the job was admitted (epoch ms): its entry's id, on Redis's clock; for an
        entry of the retry lane (its id is when it was re-queued), the envelope's
        ``created_ms`` (the client's clock)."""
        if self.envelope is not None and self.entry.stream.startswith(
                ":retry:", len(self.keys.base)):
            return self.envelope.created_ms
        return int(self.entry.entry_id.partition("-")[0])

    def cost_by(self, cost: Callable[[JobEnvelope], tuple[int, int]]) -> tuple[int, int]:
        if self.cost is None:
            assert self.envelope is not None
            self.cost = cost(self.envelope)
        return self.cost


URGENT_MS = 1_000
"""A buffered job this close to its start deadline (and not past it) is urgent."""
FOREGROUND_S = 1.0
"""How long after ``interactive`` or ``standard`` work was read background batches stay
small (``PoolConfig.backfill_batch``)."""


def _urgent_in(buffer: deque[Pulled], now: int) -> int:
    """How many of the buffered jobs are urgent: their start deadline under ``URGENT_MS``
    away, and not past."""
    soon = now + URGENT_MS
    return sum(1 for p in buffer if now < p.deadline < soon)


def _mismatch(pulled: Pulled, kinds: frozenset[str], foreign: frozenset[str]) -> str:
    """Why a decoded entry cannot be served as it is ('' when it can)."""
    assert pulled.envelope is not None
    if pulled.envelope.model in foreign:
        return f"model {pulled.envelope.model!r} is routed to other pools, not this one"
    if pulled.envelope.request.kind not in kinds:
        return (f"a {pulled.envelope.request.kind} request, but this pool serves "
                f"{' and '.join(sorted(kinds))} only")
    if not pulled.owned:
        return f"job id {pulled.entry.job_id!r} does not belong to this partition"
    if pulled.envelope.id != pulled.entry.job_id:
        return "entry job id does not match its payload"
    if not pulled.reply_owned:
        return f"reply stream {pulled.entry.reply!r} does not belong to this partition"
    return ""


def _nearest(window: list[Pulled], k: int,
             cost: Callable[[JobEnvelope], tuple[int, int]]) -> list[int]:
    """Indices of the oldest entry and the k-1 others nearest it in length (oldest first
    among equals), in buffer order."""
    if k >= len(window):
        return list(range(len(window)))
    lengths = [p.cost_by(cost)[1] for p in window]
    if min(lengths) == max(lengths):
        return list(range(k))
    head = lengths[0]
    rest = sorted(range(1, len(window)), key=lambda i: (abs(lengths[i] - head), i))
    return sorted([0, *rest[:k - 1]])


class Puller:
    def __init__(
        self,
        redis: aioredis.Redis,
        partitions: Sequence[PartitionKeys],
        consumer: str,
        *,
        scripts: Scripts | None = None,
        hold_ttl_ms: int = 86_400_000,
        max_batch: int,
        max_batch_tokens: int,
        lower_share: float,
        block_ms: int,
        window: int | None = None,
        kinds: frozenset[str] = frozenset({"embed", "chat"}),
        foreign: frozenset[str] = frozenset(),
        backfill: int = 0,
    ) -> None:
        self._redis = redis
        self._reading: Wire | None = None
        """The blocking read's own connection (see ``broker/wire.py``), made on the first
        read; it stays None for TLS (the pool's then)."""
        self._wired = False
        self._scripts = scripts or Scripts(redis)
        self._hold_ttl_ms = hold_ttl_ms
        self._partitions = list(partitions)
        self._consumer = consumer
        self._max_batch = max_batch
        self._max_tokens = max_batch_tokens
        self.window = window or max_batch
        """Entries to hold per priority (the XREADGROUP COUNT); the worker adjusts it."""
        self._kinds = kinds
        self._foreign = foreign
        """Model names this worker's configuration routes to other pools only (a name it
        does not know may be a client's alias: not refused)."""
        self._block_ms = block_ms
        self._scheduler = PriorityScheduler(lower_share)
        self._backfill = backfill
        self._foreground_at = -FOREGROUND_S
        """When foreground work was last read (monotonic s)."""
        self._where = {lane(k, p): (k, p) for p in PRIORITIES
                       for lane in (PartitionKeys.retry, PartitionKeys.stream)
                       for k in partitions}
        """Every stream read, and its partition and priority: per priority the retry lanes
        before the priority streams, so re-queued entries are buffered (and served) first."""
        self.buffers: dict[Priority, deque[Pulled]] = {p: deque() for p in PRIORITIES}
        self._newest: dict[str, str] = {}
        """Per stream, the newest entry id read (see :meth:`fill`)."""
        self._unheld = False
        """Whether the buffers may hold entries not held yet (see :meth:`hold_rest`)."""
        self._uncertain = False
        self._spread = is_cluster(redis) and len(self._partitions) > 1
        """One blocking read per partition (see the module doc)."""
        self._reads: dict[str, asyncio.Task[Any]] = {}
        """With ``_spread``: each partition's outstanding blocking read, by its key base."""

    @classmethod
    def for_pool(cls, redis: aioredis.Redis, config: SwitchyardConfig, pool: str,
                 partitions: Sequence[PartitionKeys], consumer: str,
                 scripts: Scripts | None = None) -> Puller:
        """The puller a worker of ``pool`` uses, as its configuration says."""
        settings = config.pools[pool]
        return cls(
            redis, partitions, consumer, scripts=scripts,
            hold_ttl_ms=int(config.jobs.job_ttl_s * 1000), max_batch=settings.max_batch,
            max_batch_tokens=settings.max_batch_tokens, lower_share=settings.lower_share,
            block_ms=config.worker.block_ms, window=settings.max_batch * settings.pack_window,
            kinds=ENGINE_KINDS[settings.engine],
            foreign=frozenset(m for m, route in config.models.items()
                              if pool not in (route.pool, route.overflow)),
            backfill=settings.backfill_batch,
        )

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    async def fill(self) -> list[Pulled]:
        """Top the buffers up; block when they are empty. Returns undecodable entries,
        which are not buffered: the caller dead-letters them.

        A read that failed may have been served before the connection dropped: its
        entries are then pending here, unseen. So the next fill first re-reads this
        consumer's pending entries newer than the newest it has seen (XREADGROUP
        delivers in id order, and a re-queued entry gets a new id, so exactly those)."""
        try:
            bad = await self._recover() if self._uncertain else []
            return bad + await self._fill()
        except BaseException:
            self._uncertain = True
            raise

    async def _recover(self) -> list[Pulled]:
        pipe = self._redis.pipeline(transaction=False)
        for stream in self._where:
            pipe.execute_command("XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", 10_000,
                                 "STREAMS", stream, self._newest.get(stream, "0-0"),
                                 **at_node(self._redis, stream))
        bad: list[Pulled] = []
        for reply in await pipe.execute():
            # Held or not is unknown: taken as held, they run only once started.
            bad.extend(self._accept(parse_stream_reply(reply), held=True))
        self._uncertain = False
        return bad

    async def _fill(self) -> list[Pulled]:
        if self.buffered == 0 and self._spread:
            self._unheld = True
            return self._accept(await self._read_partitions(), held=False)
        if self.buffered == 0:
            if not self._wired:
                self._reading = Wire.of(self._redis, timeout_s=self._block_ms / 1000 + 30)
                self._wired = True
            if self._reading is not None:
                reply = await self._reading.call(
                    "XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", self.window,
                    "BLOCK", self._block_ms, "STREAMS", *self._where, *[">"] * len(self._where))
            else:
                reply = await self._read_group(list(self._where))
            self._unheld = True
            return self._accept(parse_stream_reply(reply), held=False)
        calls: list[ScriptCall] = []
        for priority, buffer in self.buffers.items():
            deficit = self.window - len(buffer)
            if deficit > 0:
                calls += [self.hold_call(keys, deficit, priority) for keys in self._partitions]
        bad: list[Pulled] = []
        for held in await self._scripts.pipeline(calls):
            bad.extend(self._accept(parse_stream_reply(held), held=True))
        return bad

    async def _read_partitions(self, *, wait: bool = False) -> list[StreamEntry]:
        """What the partitions' blocking reads brought, once one has answered (``wait``:
        once all have, starting none). A failed read makes the next fill recover."""
        if not wait:
            for keys in self._partitions:
                if keys.base not in self._reads:
                    self._reads[keys.base] = asyncio.create_task(
                        self._read_group(keys.streams()))
        if not self._reads:
            return []
        done, _ = await asyncio.wait(
            self._reads.values(),
            return_when=asyncio.ALL_COMPLETED if wait else asyncio.FIRST_COMPLETED)
        entries: list[StreamEntry] = []
        failure: BaseException | None = None
        for base, task in list(self._reads.items()):
            if task in done:
                del self._reads[base]
                if task.exception() is not None:
                    failure = failure or task.exception()
                else:
                    entries += parse_stream_reply(task.result())
        if failure is not None:
            self._uncertain = True
            if not entries:
                raise failure
        return entries

    async def _read_group(self, streams: Sequence[str]) -> Any:
        """One blocking ``XREADGROUP`` of new entries of ``streams`` (one slot's, on a
        cluster) through the client's pool."""
        return await command(
            self._redis, "XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", self.window,
            "BLOCK", self._block_ms, "STREAMS", *streams, *[">"] * len(streams),
            **at_node(self._redis, streams[0]))

    async def quiesce(self) -> None:
        """Wait for the outstanding blocking reads (on shutdown, before :meth:`drain`):
        what they bring is buffered, so it is handed back, not left pending here."""
        with contextlib.suppress(Exception):  # (the watchdog re-queues a failed read's)
            self._accept(await self._read_partitions(wait=True), held=False)

    def hold_call(self, keys: PartitionKeys, count: int, priority: Priority | None = None,
                  job_ids: Sequence[str] = ()) -> ScriptCall:
        """The ``hold`` call that reads up to ``count`` new entries per stream of
        ``priority`` in one partition (none: reads nothing) and holds them and
        ``job_ids``."""
        streams = [] if priority is None else [keys.retry(priority), keys.stream(priority)]
        return ("hold", [keys.held, *streams],
                [GROUP, self._consumer, count, self._hold_ttl_ms, *job_ids])

    async def hold_rest(self) -> None:
        """Hold the buffered entries not held yet: what the blocking read brought beyond
        the batch taken. Awaited before the next batch is taken (a hold landing after
        that batch's ``start`` would mark a running job as not started)."""
        if not self._unheld:  # (only a blocking read brings entries not held)
            return
        self._unheld = False
        by_partition: dict[str, list[Pulled]] = {}
        for pulled in (p for b in self.buffers.values() for p in b if not p.held):
            by_partition.setdefault(pulled.keys.base, []).append(pulled)
        if not by_partition:
            return
        await self._scripts.pipeline([
            self.hold_call(group[0].keys, 1, job_ids=[p.entry.job_id for p in group])
            for group in by_partition.values()])
        for group in by_partition.values():
            for pulled in group:
                pulled.held = True

    def _accept(self, entries: list[StreamEntry], *, held: bool) -> list[Pulled]:
        bad = []
        if any(self._where[e.stream][1] != "batch" for e in entries):
            self._foreground_at = time.monotonic()
        for entry in entries:
            self._newest[entry.stream] = entry.entry_id  # in id order, per stream
            keys, priority = self._where[entry.stream]
            try:
                pulled = Pulled(entry, keys, priority, decode_envelope(entry.payload),
                                held=held)
            except EntryDecodeError as exc:
                bad.append(Pulled(entry, keys, priority, None, str(exc)))
                continue
            problem = _mismatch(pulled, self._kinds, self._foreign)
            if problem:
                bad.append(Pulled(entry, keys, priority, None, problem))
                continue
            self.buffers[priority].append(pulled)
        return bad

    def take(self, cost: Callable[[JobEnvelope], tuple[int, int]],
             max_tokens: int | None = None, *,
             fits: Callable[[int, int], bool] | None = None, strict: bool = False
             ) -> list[Pulled]:
        """Pack the next batch: slots by priority (with shares), and within a priority the
        oldest job plus the buffered jobs nearest its length, so little is padding; the
        whole batch within the job and padded-token bounds (``max_tokens`` if given, else
        the configured one; or ``fits(sequences, longest)``, if given). The first job is
        taken whatever its size, unless ``strict`` (work is running beside it)."""
        limit = self._max_tokens if max_tokens is None else max_tokens
        if fits is None:
            def fits(n: int, longest: int) -> bool:
                return n * longest <= limit
        batch: list[Pulled] = []
        texts = longest = 0
        for priority, slots in self._slots().items():
            buffer = self.buffers[priority]
            picked = _nearest(list(buffer), slots, cost)
            kept = set()
            for index in picked:
                n, length = buffer[index].cost_by(cost)
                if (batch or strict) and not fits(texts + n, max(longest, length)):
                    break
                kept.add(index)
                batch.append(buffer[index])
                texts, longest = texts + n, max(longest, length)
            if len(kept) == len(buffer) or kept == set(range(len(kept))):  # the oldest
                for _ in kept:
                    buffer.popleft()
            else:
                self.buffers[priority] = deque(p for i, p in enumerate(buffer) if i not in kept)
            if len(kept) < len(picked):
                break
        return batch

    def _slots(self) -> dict[Priority, int]:
        """How many of the batch's slots each priority gets, highest priority first.

        Jobs of a lower priority whose start deadline is less than ``URGENT_MS`` away go
        first, while no higher priority's job is that close to its own: a job admitted
        under a prediction that a burst of higher-priority work then broke still starts
        in time, taking time only from jobs that can spare it. The rest go by priority
        (with ``lower_share``, if set)."""
        waiting = {p: len(b) for p, b in self.buffers.items()}
        slots: dict[Priority, int] = {}
        left = self._max_batch
        now = now_ms()
        urgent_batch = 0
        for priority in PRIORITIES:
            urgent = _urgent_in(self.buffers[priority], now)
            if urgent and priority != PRIORITIES[0] and not slots:
                give = min(urgent, left)
                slots[priority], left = give, left - give
                waiting[priority] -= give
                urgent_batch = give if priority == "batch" else 0
            if urgent:
                break  # a higher priority with urgent jobs of its own keeps its turn
        present = [p for p in PRIORITIES if waiting[p] > 0]
        if len(present) == 1:  # one priority waits: it takes every slot (no credit moves)
            only = present[0]
            give = min(left, waiting[only])
            if give:
                slots[only] = slots.get(only, 0) + give
            left = 0
        for _ in range(left):
            chosen = self._scheduler.choose(waiting)
            if chosen is None:
                break
            self._scheduler.commit(chosen, waiting)
            waiting[chosen] -= 1
            slots[chosen] = slots.get(chosen, 0) + 1
        self._background(slots, urgent_batch)
        return {p: slots[p] for p in PRIORITIES if p in slots}

    def _background(self, slots: dict[Priority, int], urgent: int) -> None:
        """With ``backfill`` set (``PoolConfig.backfill_batch``), background work only
        backfills: it takes no slot beside foreground work, and while foreground work
        comes it runs in batches of at most ``backfill`` (its urgent jobs and a
        ``lower_share`` the operator set aside still go)."""
        extra = slots.get("batch", 0) - urgent
        if not self._backfill or extra <= 0 or self._scheduler.share:
            return
        if any(n for p, n in slots.items() if p != "batch"):
            keep = 0
        elif time.monotonic() - self._foreground_at < FOREGROUND_S:
            keep = min(extra, self._backfill)
        else:
            return
        if urgent + keep:
            slots["batch"] = urgent + keep
        else:
            del slots["batch"]

    async def aclose(self) -> None:
        if self._reading is not None:
            await self._reading.aclose()

    def drain(self) -> list[Pulled]:
        """Empty the buffers (on shutdown): what was read but never started."""
        held = [pulled for p in PRIORITIES for pulled in self.buffers[p]]
        for buffer in self.buffers.values():
            buffer.clear()
        return held
