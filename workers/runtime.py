"""The worker runtime: one consumer loop over a pool's priority streams.

pull (highest priority first, with a share for lower ones, within the memory budget) ->
start (skips jobs that were cancelled or expired; overlaps the engine unless the batch
holds a prefetched job, see ``puller``) -> run the engine -> finish (outcome, reply, ack:
one script per stream, one round trip per batch). Finishing a batch overlaps
running the next one; an engine that ``joins`` has several batches running at once. On
stop it pulls no more, finishes what is running, hands unstarted entries back, returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar

import redis.asyncio as aioredis

from switchyard.broker import logs
from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.errors import REDIS_FAILURES
from switchyard.broker.eviction import check_eviction_policy
from switchyard.broker.keys import Keys
from switchyard.broker.nodes import refresh_topology
from switchyard.broker.retry import Backoff, until_done
from switchyard.broker.schemas import ServedBy, now_ms
from switchyard.broker.scripts import Scripts
from switchyard.broker.streams import ensure_groups, forget_consumer
from switchyard.broker.wire import Wire
from switchyard.workers.deltas import DeltaPublisher
from switchyard.workers.engines.base import (
    Engine,
    EngineOutput,
    HasRoom,
    ReportsOutOfMemory,
)
from switchyard.workers.errors import DeviceLost, OutOfMemory, UnknownPool
from switchyard.workers.execute import Executor
from switchyard.workers.finishing import Finisher, Starting, WorkerStats
from switchyard.workers.heartbeat import Heartbeat, describe
from switchyard.workers.ledger import Ledger
from switchyard.workers.memory import Budget, FixedBudget, MemoryProbe, choose_probe
from switchyard.workers.metrics import WorkerMetrics
from switchyard.workers.puller import URGENT_MS, Pulled, Puller
from switchyard.workers.sizing import IDLE, BatchSizer, Running
from switchyard.workers.spill import Spiller

__all__ = ["Worker", "WorkerStats", "consumer_name"]

log = logging.getLogger(__name__)

MAX_RUNS = 16
"""Batches an engine that takes newcomers may have running at once."""

P = ParamSpec("P")
T = TypeVar("T")


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _wait_buckets(config: SwitchyardConfig, pool: str) -> list[float]:
    """The pool's wait targets and the SLO's objective, as histogram buckets."""
    t = config.pools[pool].wait_targets
    return [v for v in (t.interactive, t.standard, t.batch,
                        config.monitoring.objective(t.interactive)) if v]


class Worker:
    def __init__(
        self,
        redis: aioredis.Redis,
        config: SwitchyardConfig,
        pool: str,
        engine: Engine,
        *,
        consumer: str | None = None,
        probe: MemoryProbe | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if pool not in config.pools:
            raise UnknownPool(f"pool {pool!r} is not configured ({', '.join(config.pools)})")
        self.pool = pool
        self.engine = engine
        self.consumer = consumer or consumer_name()
        self.stats = WorkerStats()
        self._redis = redis
        self._config = config
        settings = config.pools[pool]
        keys = self._keys = Keys(config.redis.prefix)
        self._partitions = keys.partitions(pool, settings.partitions)
        self._wire = Wire.of(redis)  # start, complete, hold (see broker/wire.py)
        self._scripts = Scripts(redis, wire=self._wire)
        self._ledger = Ledger(self._scripts, config, self.consumer)
        self._puller = Puller.for_pool(redis, config, pool, self._partitions, self.consumer,
                                       self._scripts)
        if probe is None:
            probe = (choose_probe(engine.device, settings.memory_budget) if engine.token_bytes
                     else FixedBudget(0))
        self._budget = Budget(probe, settings.memory_target, settings.memory_margin)
        self._sizer = BatchSizer(engine, self._budget, settings.max_batch_tokens)
        self.metrics = metrics or WorkerMetrics(pool, self.consumer, engine.device,
                                                _wait_buckets(config, pool))
        self.charged = 0
        """Bytes the running batches are charged (engines that join: their cache)."""
        self._read_backoff = Backoff(first=0.1, most=0.5)
        self.spiller = Spiller(redis, config, pool)
        """Moves jobs waiting too long on local pools that overflow to this one."""
        self._deltas = DeltaPublisher(redis, config.jobs.reply_maxlen,
                                      config.worker.stream_interval_ms / 1000)
        self._executor = Executor(
            engine, ServedBy(worker=self.consumer, pool=pool, engine=engine.name,
                             device=engine.device),
            self._deltas, self._out_of_memory, self._ran,
            per_hour=0.0 if engine.name == "bridge" else settings.cost_per_hour)
        self._finisher = Finisher(self._ledger, self._deltas, self.stats, self.metrics, engine,
                                  redis, keys, logs.log_format() == "json")
        self._heartbeat = Heartbeat(
            redis, keys.pool(pool), self.consumer, describe(engine.name, engine.device, settings),
            interval_s=config.worker.heartbeat_s, ttl_s=config.worker.heartbeat_ttl_s,
            refresh=self._vitals, scripts=self._scripts,
        )

    def _out_of_memory(self, exc: OutOfMemory) -> None:
        if self._sizer.out_of_memory(exc.event):  # once per event, not per request
            self.stats.oom_recoveries += 1
            self.metrics.oom.inc()

    def _ran(self) -> None:
        self.stats.batches += 1
        self._sizer.ran_clean()

    def _vitals(self) -> dict[str, str]:
        """Memory and utilisation for the heartbeat (and the metrics), read now."""
        engine = dict(self.engine.vitals()) if isinstance(self.engine, HasRoom) else {}
        engine["wait_p99_ms"] = self.metrics.times.recent_wait_p99_ms()  # (`switchyard top`)
        engine["capacity"] = self.metrics.times.capacity()  # (the planner's live advice)
        reading = self._sizer.vitals()
        if reading is None:
            return engine
        self.metrics.memory(reading, self._sizer.last_budget)
        return {**engine, "mem_free": str(reading.free), "mem_total": str(reading.total),
                "budget_bytes": str(self._sizer.last_budget),
                "memory_source": self._budget.probe.source,
                "gpu_util": "" if reading.utilisation is None else f"{reading.utilisation:.2f}"}

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Serve until ``stop`` is set, then drain and return. A lost device
        (:class:`DeviceLost`) hands back every job held and is raised: the process should
        exit, so its supervisor starts a fresh one."""
        await self._retry(check_eviction_policy, self._redis, "the worker's server")
        await self._retry(ensure_groups, self._redis, self._partitions, self._scripts)
        await self._retry(self._scripts.load)
        self._sizer.start()
        if isinstance(self.engine, ReportsOutOfMemory):
            loop = asyncio.get_running_loop()

            def told(exc: OutOfMemory) -> None:  # from the engine's thread
                loop.call_soon_threadsafe(self._out_of_memory, exc)

            self.engine.out_of_memory = told
        # Beat before the first read: a watchdog that saw this consumer hold entries with
        # no heartbeat would take it for dead and re-queue work that is running.
        await self._retry(self._heartbeat.beat)
        beating = asyncio.create_task(self._heartbeat.run(stop))
        spilling = asyncio.create_task(self.spiller.run(stop))
        try:
            await (self._run_joining(stop) if self.engine.joins else self._run_batches(stop))
        except DeviceLost as exc:
            log.error("%s; handing back the jobs held here and exiting (the supervisor "
                      "restarts the worker)", exc)
            stop.set()
            raise
        finally:
            await spilling
            await self._shutdown(beating)
        return self.stats

    async def _run_batches(self, stop: asyncio.Event) -> None:
        """One batch at a time; finishing one overlaps running the next."""
        finishing: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                batch = await self._next_batch()
                if batch:
                    finishing = await self._serve(batch, finishing)
                    if finishing is not None and not finishing.done():
                        await asyncio.sleep(0)  # its outcomes go out before the next read
        finally:
            if finishing is not None:
                await finishing

    async def _run_joining(self, stop: asyncio.Event) -> None:
        """For engines whose running batch takes newcomers: keep pulling while batches run,
        as long as the memory budget has room for them beside what runs (at most MAX_RUNS
        batches at once). When the next job does not fit, wait for a batch to end."""
        running: dict[asyncio.Task[None], list[tuple[int, int]]] = {}  # task -> its costs
        try:
            while not stop.is_set():
                for task in [t for t in running if t.done()]:
                    running.pop(task)
                    task.result()
                now = IDLE.plus([c for costs in running.values() for c in costs])
                self.charged = self._sizer.charged(now)
                if len(running) >= MAX_RUNS:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                room = self.engine.room() if isinstance(self.engine, HasRoom) else None
                if room == 0:  # the engine is full (or down): wait for room
                    await self._wait_for_room(running)
                    continue
                batch = await self._next_batch(now, room)
                if batch:
                    costs = [p.cost_by(self.engine.cost) for p in batch]
                    self.charged = self._sizer.charged(now.plus(costs))
                    running[asyncio.create_task(self._serve_alone(batch))] = costs
                    if isinstance(self.engine, HasRoom):
                        self.engine.taken([p.entry.job_id for p in batch])
                elif running and any(self._puller.buffers.values()):
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await asyncio.gather(*running, return_exceptions=True)

    async def _wait_for_room(self, running: dict[asyncio.Task[None], list[tuple[int, int]]]
                             ) -> None:
        assert isinstance(self.engine, HasRoom)
        if running:
            await asyncio.wait(running, timeout=self.engine.scrape_s,
                               return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(self.engine.scrape_s)

    async def _serve_alone(self, batch: Sequence[Pulled]) -> None:
        try:
            finishing = await self._serve(batch, None)
            if finishing is not None:
                await finishing
        finally:
            if isinstance(self.engine, HasRoom):
                self.engine.settled([p.entry.job_id for p in batch])

    async def _next_batch(self, running: Running = IDLE, room: int | None = None
                          ) -> list[Pulled]:
        """The next batch from the buffer (topped up first), within the memory budget
        beside the ``running`` rows (see ``workers/sizing.py``), and of at most ``room``
        jobs if given."""
        try:
            bad = await self._puller.fill()
            self._read_backoff.reset()
        except REDIS_FAILURES as exc:
            # Redis went away (what was read stays buffered and pending here; running and
            # finishing batches retry their writes): back off, and after a restart that
            # lost the groups (no persistence), create them again.
            delay = self._read_backoff.next()
            log.warning("read failed: %s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            await refresh_topology(self._redis, exc)  # (a cluster's master failed over)
            if "NOGROUP" in str(exc):
                await self._retry(ensure_groups, self._redis, self._partitions, self._scripts)
            return []
        if bad:
            await self._retry(self._finisher.dead_letter, bad)
        await self._cost_off_loop()
        fits = self._sizer.fits(running)
        if room is not None:
            budget_fits = fits

            def fits(n: int, longest: int) -> bool:
                return n <= room and budget_fits(n, longest)
        limit = self._sizer.token_limit(fresh=False)
        batch = self._puller.take(self.engine.cost, limit, fits=fits, strict=running.rows > 0)
        if batch and self._sizer.bounded:  # read about as many as the budget will take
            self._puller.window = self._sizer.window(batch, limit, self._config.pools[self.pool])
        self._heartbeat.info["last_batch"] = str(len(batch))
        if self._sizer.bounded and self._budget.last is not None:
            self.metrics.memory(self._budget.last, self._sizer.last_budget)
        await self._retry(self._puller.hold_rest)
        return await self._refuse_oversized(batch)

    async def _cost_off_loop(self) -> None:
        """Cost the entries just read in a thread: engines tokenise to cost a job, which
        for long inputs would hold up the event loop (and its heartbeats)."""
        if not self.engine.tokenises:
            return
        fresh = [p for b in self._puller.buffers.values() for p in b
                 if p.cost is None and p.envelope is not None]
        if fresh:
            cost = self.engine.cost
            await asyncio.to_thread(lambda: [p.cost_by(cost) for p in fresh])

    async def _refuse_oversized(self, batch: list[Pulled]) -> list[Pulled]:
        """Fail the jobs that alone exceed the whole memory budget; the rest go on."""
        refused = self._sizer.refuse(batch, self.engine.cost)
        if not refused:
            return batch
        self.stats.too_large += len(refused)
        self.metrics.too_large.inc(len(refused))
        await self._retry(self._ledger.finish, refused)
        gone = {id(f.pulled) for f in refused}
        return [p for p in batch if id(p) not in gone]

    async def _serve(
        self, batch: Sequence[Pulled], finishing: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        """Start, run and finish one batch; returns the task finishing it.

        A job counts as started once ``start`` has landed, or, if it came from the
        blocking read (not held), from the moment it was read; a job that kills this
        worker while running has then always spent an attempt (the watchdog re-queues
        held jobs never started without spending one). So a batch holding a held job
        runs only once ``start`` has landed, as does one holding a job whose deadline is
        under ``URGENT_MS`` away (``start`` ends, on the Redis clock, the jobs whose
        deadline has passed, and skips those already ended: they do not run). Otherwise
        the start round trip overlaps the engine and the finish: whichever lands first,
        the job ends once (``start`` skips a job that has its outcome; ``complete`` keeps
        the first outcome, so one ``start`` ended stands). Finishing does not wait for the
        next batch.
        """
        begun: list[bool] = []
        began = now_ms()  # (the jobs' queue wait ends here: counted when they finish)

        async def start() -> dict[int, str]:
            begun.append(True)
            return await self._retry(self._ledger.start, batch)

        starting = asyncio.create_task(start())
        soon = now_ms() + URGENT_MS
        if any(p.held or 0 < p.deadline < soon for p in batch):
            verdicts = await starting
            run = [p for p in batch if verdicts[id(p)] == "run"]
            if not run:
                return finishing
            return await self._then_finish(finishing, run, await self._run_engine(run),
                                           began=began)
        try:
            outputs = await self._run_engine(batch, starting)
        except BaseException:
            await starting
            raise
        if not begun:  # answered without yielding (echo): start rides with the finish
            starting.cancel()
            return await self._then_finish(finishing, batch, outputs, "with", began)
        return await self._then_finish(finishing, batch, outputs, starting, began)

    async def _run_engine(self, run: Sequence[Pulled],
                          starting: asyncio.Task[dict[int, str]] | None = None
                          ) -> list[EngineOutput]:
        """The engine's outputs for ``run``. On a lost device its jobs are handed back
        (no attempt spent: no job is to blame) before the error goes up."""
        try:
            return await self._executor.run(run)
        except DeviceLost:
            if starting is not None:  # (a start landing after the release would mark
                await starting        # the handed-back job running)
            await self._retry(self._ledger.release, run)
            self.stats.released += len(run)
            raise

    async def _then_finish(
        self, previous: asyncio.Task[None] | None, run: Sequence[Pulled],
        outputs: Sequence[EngineOutput],
        starting: Starting = None, began: int = 0,
    ) -> asyncio.Task[None] | None:
        """Finish ``run`` in the background after the finish before it (one in flight).
        ``starting``: the batch's ``start``, if still to be awaited; ``"with"``: none was
        sent, so the finish starts the jobs itself, in its own round trip. ``began``: when
        the batch was taken up (epoch ms)."""
        if previous is not None:
            await previous
        if not run:
            return None
        return asyncio.create_task(self._retry(self._finisher.finish, run, outputs, starting,
                                               began))

    async def _shutdown(self, beating: asyncio.Task[None]) -> None:
        await self._puller.quiesce()
        held = self._puller.drain()
        if held:
            await self._retry(self._ledger.release, held)
            self.stats.released += len(held)
        await beating
        try:
            await self._heartbeat.remove()
            await forget_consumer(self._redis, self._partitions, self.consumer, self._scripts)
        except REDIS_FAILURES as exc:
            log.warning("could not deregister %s: %s", self.consumer, exc)
        await self._puller.aclose()
        if self._wire is not None:
            await self._wire.aclose()

    async def _retry(self, op: Callable[P, Awaitable[T]], *args: P.args,
                     **kwargs: P.kwargs) -> T:
        """Redis writes of work already read must not be dropped: retry until they land."""
        return await until_done(lambda: op(*args, **kwargs), op.__name__)
