"""`switchyard bench chaos`: nothing admitted is lost while workers, a watchdog and Redis die.

A private Redis with AOF on (everysec), ``--workers`` echo workers (``--service-ms`` per
batch) and ``--watchdogs`` watchdogs, all real processes. Jobs arrive at ``--rate`` across
priorities. Every ``--kill-every`` seconds a random worker is killed with SIGKILL and a
new one started; a quarter of the way in one watchdog is killed (and not restarted); half
way Redis is stopped and started again. Submissions that find Redis down retry with the
same idempotency key, so none is admitted twice.

Reported: jobs admitted, outcomes (by state), lost (admitted, no outcome by the end),
duplicate visible results (a second outcome on a caller's reply stream), duplicate
executions (results dropped by ``complete``: the job had one already), and re-dispatch
time: from a kill until each job the dead worker held is handed to another worker (its
re-queued entry pending on another consumer; or it runs there, or has ended), p50 and
p99. Also reported, from the same kill: until the watchdog re-queued it, and until it
ran again (which adds the wait in the new worker's buffer, and, if that worker is
killed too before it starts the job, the second kill's whole re-dispatch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.errors import BrokerUnavailable
from switchyard.broker.keys import GROUP, Keys
from switchyard.broker.schemas import PRIORITIES, JobOutcome, Priority
from switchyard.broker.settings import RedisSettings
from switchyard.broker.streams import pending_of, read_entries
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.errors import AdmissionRejected
from switchyard.ops.bench.common import percentile
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.redis_server import RedisServer
from switchyard.workers.cli import watchdog_command
from switchyard.workers.supervisor import stop_process

__all__ = ["ChaosOptions", "ChaosReport", "check", "render", "run_chaos_bench"]

POOL = "chaos"
MIX = (("interactive", 0.2), ("standard", 0.5), ("batch", 0.3))
ENDED = {"succeeded", "failed", "cancelled", "expired"}


@dataclass(frozen=True)
class ChaosOptions:
    jobs: int = 10_000
    workers: int = 3
    watchdogs: int = 2
    service_ms: float = 100.0
    batch: int = 8
    rate: float = 150.0
    """Jobs offered per second: with the defaults, 62 % of the 240/s three workers serve,
    so the two left while a killed one restarts still keep up."""
    kill_every_s: float = 3.0
    heartbeat_ttl_s: float = 3.0
    seed: int = 11
    logs: Path | None = None
    """Keep the workers' and watchdogs' logs here (else a temporary folder)."""


@dataclass
class ChaosReport:
    jobs: int
    admitted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicate_visible: int = 0
    duplicate_executions: int = 0
    worker_kills: int = 0
    redispatched: int = 0
    redispatch_p50_s: float = float("nan")
    redispatch_p99_s: float = float("nan")
    redispatch_target_s: float = 0.0
    requeue_p50_s: float = float("nan")
    """From a kill until the watchdog re-queued the job (the rest of re-dispatch is the
    wait in the stream, and a worker's start)."""
    requeue_p99_s: float = float("nan")
    rerun_p50_s: float = float("nan")
    """From a kill until the job ran again on another worker (or ended): re-dispatch,
    plus the wait in that worker's buffer, plus any later kill of that worker."""
    rerun_p99_s: float = float("nan")
    killed_twice: int = 0
    """Jobs a killed worker held that an earlier kill had already re-dispatched (to this
    worker): their "running again" time spans both kills."""
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)


def _config(options: ChaosOptions) -> str:
    return f"""
[redis]
prefix = "sychaos"
[worker]
block_ms = 100
heartbeat_s = {options.heartbeat_ttl_s / 6:g}
heartbeat_ttl_s = {options.heartbeat_ttl_s:g}
[watchdog]
interval_s = 0.5
max_attempts = 5
[pools.{POOL}]
engine = "echo"
max_batch = {options.batch}
pack_window = 1
delay_ms = {options.service_ms:g}
admission_control = false
[pools.{POOL}.caps]
interactive = 1000000
standard = 1000000
batch = 1000000
[models.{POOL}]
pool = "{POOL}"
"""


def run_chaos_bench(options: ChaosOptions) -> ChaosReport:
    with tempfile.TemporaryDirectory(prefix="switchyard-chaos-") as tmp:
        folder = Path(tmp)
        if options.logs is not None:
            options.logs.mkdir(parents=True, exist_ok=True)
        path = (options.logs or folder) / "chaos.toml"
        path.write_text(_config(options))
        config = SwitchyardConfig.model_validate(tomllib.loads(path.read_text()))
        server = RedisServer(folder / "redis", aof=True).start()
        try:
            return asyncio.run(_Chaos(options, config, path, server).run())
        finally:
            server.stop()


class _Chaos:
    def __init__(self, options: ChaosOptions, config: SwitchyardConfig, path: Path,
                 server: RedisServer) -> None:
        self.options, self.config, self.path, self.server = options, config, path, server
        self.report = ChaosReport(options.jobs, redispatch_target_s=options.heartbeat_ttl_s + 2)
        self.rng = random.Random(options.seed)
        self.workers: list[WorkerProcess] = []
        self.watchdogs: list[subprocess.Popen[bytes]] = []
        self.seen: Counter[str] = Counter()
        self.redispatch: list[float] = []
        self.rerun: list[float] = []
        self.handed: set[str] = set()
        self.requeue_times: list[float] = []
        self.keys = Keys(config.redis.prefix).partition(POOL, 0)
        self.started = time.monotonic()

    def _saw(self, job_id: str) -> None:
        self.seen[job_id] += 1

    def _event(self, text: str) -> None:
        wall = time.time()
        clock = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"
        self.report.events.append(f"{time.monotonic() - self.started:6.1f}s ({clock}) {text}")

    def _worker(self, n: int) -> WorkerProcess:
        log = self.path.with_name(f"worker-{n}.log")
        return WorkerProcess(POOL, self.server.url, self.path, self.config, log=log).launch()

    def _watchdog(self, n: int) -> subprocess.Popen[bytes]:
        with self.path.with_name(f"watchdog-{n}.log").open("ab") as out:
            return subprocess.Popen(watchdog_command(config=self.path, redis_url=self.server.url),
                                    stdout=out, stderr=subprocess.STDOUT)

    async def run(self) -> ChaosReport:
        self.workers = [self._worker(i) for i in range(self.options.workers)]
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in self.workers))
        self.watchdogs = [self._watchdog(i) for i in range(self.options.watchdogs)]
        redis = RedisSettings.from_url(self.server.url).connect()
        try:
            async with AsyncClient(self.config, redis_url=self.server.url) as client:
                client.replies.observer = self._saw
                await self._load_under_chaos(client, redis)
        finally:
            await redis.aclose()
            for worker in self.workers:
                await asyncio.to_thread(worker.stop, 30)
            for watchdog in self.watchdogs:
                await asyncio.to_thread(stop_process, watchdog, 10)
        return self.report

    async def _load_under_chaos(self, client: AsyncClient, redis: aioredis.Redis) -> None:
        stop = asyncio.Event()
        chaos = asyncio.create_task(self._chaos(redis, stop))
        tasks = []
        interval = 1 / self.options.rate
        for i in range(self.options.jobs):
            tasks.append(asyncio.create_task(self._one(client, i)))
            await asyncio.sleep(max(0.0, self.started + (i + 1) * interval - time.monotonic()))
        outcomes = await asyncio.gather(*tasks)
        stop.set()
        await chaos
        self.report.seconds = time.monotonic() - self.started
        admitted = [o for o in outcomes if o != "not admitted"]
        self.report.admitted = len(admitted)
        self.report.outcomes = dict(Counter(o.state.value if isinstance(o, JobOutcome) else o
                                            for o in admitted))
        self.report.lost = sum(1 for o in admitted if o == "lost")
        await asyncio.sleep(1.0)  # the last replies read
        self.report.duplicate_visible = sum(n - 1 for n in self.seen.values() if n > 1)
        dups = [await redis.hget(self.keys.drain(p), "dup") for p in PRIORITIES]
        self.report.duplicate_executions = sum(int(d or 0) for d in dups)
        self.report.redispatched = len(self.redispatch)
        self.report.redispatch_p50_s = percentile(self.redispatch, 50)
        self.report.redispatch_p99_s = percentile(self.redispatch, 99)
        self.report.requeue_p50_s = percentile(self.requeue_times, 50)
        self.report.requeue_p99_s = percentile(self.requeue_times, 99)
        self.report.rerun_p50_s = percentile(self.rerun, 50)
        self.report.rerun_p99_s = percentile(self.rerun, 99)

    async def _one(self, client: AsyncClient, i: int) -> JobOutcome | str:
        priority = cast(Priority, self.rng.choices([p for p, _ in MIX], [w for _, w in MIX])[0])
        give_up = time.monotonic() + 60
        while True:  # the same idempotency key: a retry never admits the job twice
            try:
                job = await client.embed(POOL, f"job {i}", priority=priority,
                                         idempotency_key=f"chaos-{i}", deadline_s=3600)
                break
            except (BrokerUnavailable, AdmissionRejected):
                if time.monotonic() > give_up:
                    return "not admitted"
                await asyncio.sleep(0.2)
        try:
            return await job.outcome(timeout=300)
        except Exception:  # any way of not getting an outcome is a loss
            return "lost"

    async def _chaos(self, redis: aioredis.Redis, stop: asyncio.Event) -> None:
        duration = self.options.jobs / self.options.rate
        watchdog_at, redis_at = duration / 4, duration / 2
        next_kill = self.options.kill_every_s
        trackers = []
        while not stop.is_set():
            now = time.monotonic() - self.started
            if watchdog_at and now >= watchdog_at and self.watchdogs:
                self.watchdogs[0].kill()
                self.watchdogs[0].wait()
                self._event(f"SIGKILL watchdog pid {self.watchdogs[0].pid} (not restarted)")
                self.watchdogs.pop(0)
                watchdog_at = 0
            if redis_at and now >= redis_at:
                await asyncio.to_thread(self._restart_redis)
                redis_at = 0
            if now >= next_kill and now < duration:
                trackers.append(asyncio.create_task(self._kill_one(redis)))
                next_kill += self.options.kill_every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
        await asyncio.gather(*trackers)

    def _restart_redis(self) -> None:
        self._event("Redis stopped (SIGTERM; AOF everysec)")
        self.server.stop()
        time.sleep(1.0)
        self.server.start()
        self._event("Redis started again from its AOF")

    async def _kill_one(self, redis: aioredis.Redis) -> None:
        n = self.rng.randrange(len(self.workers))
        victim = self.workers[n]
        assert victim.process is not None
        pid = victim.process.pid
        victim.signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 30)
        killed_at = time.monotonic()
        self.report.worker_kills += 1
        held = await self._held_by(redis, pid)
        self.report.killed_twice += len(self.handed & held.keys())
        tracking = asyncio.create_task(self._track(redis, held, killed_at))
        self.workers[n] = self._worker(100 + self.report.worker_kills)  # not waited for
        self._event(f"SIGKILL worker pid {pid} holding {len(held)} jobs")
        slowest = await tracking
        self._event(f"  worker pid {pid}'s jobs re-dispatched within {slowest:.2f} s")

    async def _held_by(self, redis: aioredis.Redis, pid: int) -> dict[str, _Held]:
        """The jobs pending on the dead worker's consumer (retried while Redis restarts)."""
        for _ in range(50):
            try:
                held: dict[str, _Held] = {}
                for stream in self.keys.streams():
                    for name in [str(c["name"]) for c in
                                 await redis.xinfo_consumers(stream, GROUP)
                                 if f"-{pid}-" in str(c["name"])]:
                        pending = await pending_of(redis, stream, GROUP, name, count=10_000)
                        found = await read_entries(redis, stream, [p.entry_id for p in pending])
                        held.update((e.job_id, _Held(name, stream, e.entry_id))
                                    for e in found.values())
                return held
            except RedisError:
                await asyncio.sleep(0.1)
        return {}

    async def _track(self, redis: aioredis.Redis, held: dict[str, _Held], since: float) -> float:
        """Poll each held job until it runs on another worker or ends, noting the times
        from the kill until the watchdog re-queued it, until another worker was handed
        it (re-dispatch), and until it ran again. Returns the longest re-dispatch."""
        running: dict[str, _Held] = dict(held)
        undelivered = set(held)
        requeued: set[str] = set()
        slowest = 0.0
        while running and time.monotonic() - since < 120:
            try:
                records, holders = await self._poll(redis, running)
            except RedisError:
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic() - since
            for (job_id, old), (state, worker, entry, stream) in zip(
                    list(running.items()), records, strict=True):
                moved = entry is not None and (stream, entry) != (old.stream, old.entry)
                if moved and job_id not in requeued:
                    requeued.add(job_id)
                    self.requeue_times.append(now)
                elsewhere = state in ENDED or (state == "running" and worker != old.consumer)
                holder = holders.get((str(stream), str(entry)), old.consumer)
                handed = moved and holder != old.consumer
                if job_id in undelivered and (elsewhere or handed):
                    undelivered.discard(job_id)
                    self.redispatch.append(now)
                    self.handed.add(job_id)
                    slowest = max(slowest, now)
                if elsewhere:
                    self.rerun.append(now)
                    running.pop(job_id)
            await asyncio.sleep(0.05)
        return slowest

    async def _poll(self, redis: aioredis.Redis, jobs: dict[str, _Held]
                    ) -> tuple[list[list[str | None]], dict[tuple[str, str], str]]:
        """Each job's state, worker, entry and stream, and which consumer holds each
        pending entry of the partition (one round trip for the jobs, one per stream)."""
        pipe = redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.hmget(self.keys.job(job_id), ["state", "worker", "entry", "stream"])
        records: list[list[str | None]] = await pipe.execute()
        holders: dict[tuple[str, str], str] = {}
        for stream in self.keys.streams():
            holders |= {(stream, p.entry_id): p.consumer
                        for p in await pending_of(redis, stream, GROUP, None, count=10_000)}
        return records, holders


@dataclass(frozen=True)
class _Held:
    """A job a killed worker held: its consumer, and the stream entry it held."""

    consumer: str
    stream: str
    entry: str


def render(report: ChaosReport) -> str:
    out = [*report.events,
           f"jobs {report.jobs}, admitted {report.admitted}, outcomes {report.outcomes} "
           f"in {report.seconds:.1f} s",
           f"lost {report.lost}; duplicate visible results {report.duplicate_visible}; "
           f"duplicate executions {report.duplicate_executions}",
           f"worker kills {report.worker_kills}; jobs re-dispatched {report.redispatched}: "
           f"p50 {report.redispatch_p50_s:.2f} s, p99 {report.redispatch_p99_s:.2f} s "
           f"(target <= {report.redispatch_target_s:g} s: heartbeat TTL + 2 s); re-queued "
           f"by the watchdog after p50 {report.requeue_p50_s:.2f} s, "
           f"p99 {report.requeue_p99_s:.2f} s; running again after "
           f"p50 {report.rerun_p50_s:.2f} s, p99 {report.rerun_p99_s:.2f} s "
           f"({report.killed_twice} jobs were killed again on the worker they were handed to)",
           json.dumps(asdict(report))]
    return "\n".join(out)


def check(report: ChaosReport) -> Sequence[str]:
    failures = []
    if report.lost:
        failures.append(f"{report.lost} admitted jobs lost")
    if report.admitted != report.jobs:
        failures.append(f"only {report.admitted} of {report.jobs} jobs admitted")
    if report.duplicate_visible:
        failures.append(f"{report.duplicate_visible} duplicate visible results")
    if not report.redispatch_p99_s <= report.redispatch_target_s:
        failures.append(f"re-dispatch p99 {report.redispatch_p99_s:.2f} s "
                        f"> {report.redispatch_target_s:g} s")
    return failures
