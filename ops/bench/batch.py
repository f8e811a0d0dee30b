"""`switchyard bench batch`: background batches, measured.

(a) Throughput: a ``lines``-line echo batch run by the batch runner (in this process, as a
    batch worker runs it: validation, feeding with idempotency keys, output and error
    files, the end) against the same requests submitted directly with the async client
    (``asyncio.gather`` in chunks of 500 at the ``batch`` priority, then every result),
    on the same echo worker; lines/s from start to the last result, rounds interleaved.
(b) Backfill: an interactive load at half the pool's capacity on an echo pool whose
    batches cost ``job_ms`` a job (a saturated device), alone and with a large batch
    running beside it on the same pool; the interactive p50/p99 end to end of each, the
    rise against the bound (the larger of 20 % and one full batch's service time), the
    pool's busy share (its batches' service time over the wall time, from the worker's
    metrics) and the batch's lines answered meanwhile; rounds interleaved.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import httpx

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import EmbedResult
from switchyard.dispatcher.batches.files import FileStore
from switchyard.dispatcher.batches.records import BatchRecords
from switchyard.dispatcher.batches.runner import run as run_batch
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.ops.bench.common import bench_env, percentile
from switchyard.ops.bench.defaults import quiet_gc
from switchyard.ops.bench.raw import open_loop
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.redis_server import free_port

__all__ = ["BatchBenchOptions", "BatchReport", "render", "run_batch_bench"]

CONFIG = """
[redis]
prefix = "sybatch"
[batch]
max_lines = 1000000
max_file_bytes = 1000000000
in_flight = 1000
lease_s = 2
[pools.echo]
engine = "echo"
max_batch = 100
[pools.echo.caps]
batch = 10000000
[models.echo]
pool = "echo"
[pools.busy]
engine = "echo"
max_batch = {max_batch}
job_delay_ms = {job_ms}
backfill_batch = {backfill}
[pools.busy.caps]
interactive = 1000000
batch = 10000000
[models.busy]
pool = "busy"
"""
TEXT = "the quick brown fox jumps over the lazy dog"


@dataclass(frozen=True)
class BatchBenchOptions:
    lines: int = 10_000
    rounds: int = 3
    job_ms: float = 2.0
    """Backfill: what each job adds to an echo batch on the busy pool."""
    max_batch: int = 32
    seconds: float = 10.0
    """Backfill: each interactive stretch."""
    backfill: int = 8
    """Backfill: the busy pool's ``backfill_batch`` (0: off)."""
    load: float = 0.5
    """Backfill: the interactive load, as a share of the busy pool's capacity."""


@dataclass
class BackfillRound:
    alone_p50_ms: float
    alone_p99_ms: float
    beside_p50_ms: float
    beside_p99_ms: float
    alone_busy: float
    beside_busy: float
    batch_lines_answered: int


@dataclass
class BatchReport:
    lines: int
    direct_lines_per_s: list[float] = field(default_factory=list)
    batch_lines_per_s: list[float] = field(default_factory=list)
    backfill: list[BackfillRound] = field(default_factory=list)
    job_ms: float = 0.0
    max_batch: int = 0
    rate: float = 0.0
    backfill_batch: int = 0

    @property
    def ratio(self) -> float:
        return statistics.median(b / d for b, d in zip(
            self.batch_lines_per_s, self.direct_lines_per_s, strict=True))


def _lines(n: int, model: str) -> str:
    return "".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/embeddings",
                               "body": {"model": model, "input": f"{TEXT} {i}"}}) + "\n"
                   for i in range(n))


async def _new_batch(config: SwitchyardConfig, url: str, files: FileStore, content: str
                     ) -> str:
    upload = files.upload("bench", "bench.jsonl")
    upload.write(content.encode())
    record = upload.commit("batch")
    async with AsyncClient(config, redis_url=url) as client:
        records = BatchRecords(client.redis, client.keys, client.scripts, 3_600)
        state = await records.create("bench", "/v1/embeddings", record.id, None,
                                     config.batch.window_s)
    return state.id


async def _direct(config: SwitchyardConfig, url: str, n: int) -> float:
    async with AsyncClient(config, redis_url=url) as client:
        start = time.perf_counter()
        jobs: list[AsyncJob[EmbedResult]] = []
        for first in range(0, n, 500):
            jobs += await asyncio.gather(*[
                client.embed("echo", f"{TEXT} {i}", priority="batch")
                for i in range(first, min(n, first + 500))])
        for job in jobs:
            await job.result()
        return n / (time.perf_counter() - start)


async def _batched(config: SwitchyardConfig, url: str, files: FileStore, n: int) -> float:
    batch_id = await _new_batch(config, url, files, _lines(n, "echo"))
    start = time.perf_counter()
    status = await run_batch(batch_id, config, url, files)
    elapsed = time.perf_counter() - start
    if status != "completed":
        raise RuntimeError(f"the bench batch ended {status}")
    return n / elapsed


def _busy_s(metrics: str, job_ms: float) -> float:
    """Seconds the busy pool's worker has spent running batches (its batch sizes' sum)."""
    for line in httpx.get(metrics).text.splitlines():
        if line.startswith("switchyard_batch_size_sum"):
            return float(line.rsplit(" ", 1)[1]) * job_ms / 1000
    return 0.0


async def _interactive(config: SwitchyardConfig, url: str, rate: float, seconds: float,
                       metrics: str, job_ms: float) -> tuple[list[float], float]:
    """End-to-end latencies (ms) of an open-loop interactive load, and the pool's busy
    share meanwhile."""
    async with AsyncClient(config, redis_url=url) as client:
        async def one() -> float:
            t0 = time.perf_counter()
            job = await client.embed("busy", TEXT, priority="interactive")
            await job.result(timeout=60)
            return (time.perf_counter() - t0) * 1000

        busy0, t0 = _busy_s(metrics, job_ms), time.perf_counter()
        with quiet_gc():
            latencies = await open_loop(one, rate, seconds)
        share = (_busy_s(metrics, job_ms) - busy0) / (time.perf_counter() - t0)
        return latencies, share


async def _backfill_round(config: SwitchyardConfig, url: str, files: FileStore,
                          options: BatchBenchOptions, metrics: str) -> BackfillRound:
    rate = options.load * 1000 / options.job_ms
    alone, alone_busy = await _interactive(config, url, rate, options.seconds, metrics,
                                           options.job_ms)
    lines = int(2 * options.seconds * 1000 / options.job_ms)  # more than the stretch takes
    batch_id = await _new_batch(config, url, files, _lines(lines, "busy"))
    running = asyncio.create_task(run_batch(batch_id, config, url, files))
    async with AsyncClient(config, redis_url=url) as client:
        records = BatchRecords(client.redis, client.keys, client.scripts, 3_600)
        while (await records.get(batch_id)).status != "in_progress":  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # (polling Redis: the runner is another task's)
        await asyncio.sleep(1.0)  # the batch under way
        before = (await records.get(batch_id)).completed
        beside, beside_busy = await _interactive(config, url, rate, options.seconds, metrics,
                                                 options.job_ms)
        answered = (await records.get(batch_id)).completed - before
        await records.move(batch_id, "in_progress", "cancelling",
                           cancelling_at=int(time.time()))
    await running
    return BackfillRound(
        round(percentile(alone, 50), 2), round(percentile(alone, 99), 2),
        round(percentile(beside, 50), 2), round(percentile(beside, 99), 2),
        round(alone_busy, 3), round(beside_busy, 3), answered)


def run_batch_bench(options: BatchBenchOptions) -> BatchReport:
    report = BatchReport(options.lines, job_ms=options.job_ms, max_batch=options.max_batch,
                         rate=options.load * 1000 / options.job_ms,
                         backfill_batch=options.backfill)
    with bench_env(CONFIG.format(max_batch=options.max_batch, job_ms=options.job_ms,
                                 backfill=options.backfill)) as env:
        config = env.config
        files = FileStore.for_config(config, env.folder / "files")
        port = free_port()
        busy = WorkerProcess("busy", env.redis_url, env.config_path, config)
        busy.args += ["--metrics-port", str(port)]
        with WorkerProcess("echo", env.redis_url, env.config_path, config), busy:
            metrics = f"http://127.0.0.1:{port}/metrics"
            for _ in range(options.rounds):
                report.direct_lines_per_s.append(round(asyncio.run(
                    _direct(config, env.redis_url, options.lines))))
                report.batch_lines_per_s.append(round(asyncio.run(
                    _batched(config, env.redis_url, files, options.lines))))
                report.backfill.append(asyncio.run(
                    _backfill_round(config, env.redis_url, files, options, metrics)))
    return report


def render(report: BatchReport) -> str:
    out = [f"throughput: a {report.lines}-line echo batch against the same jobs submitted "
           "directly (chunked gather at the batch priority), rounds interleaved:"]
    for i, (d, b) in enumerate(zip(report.direct_lines_per_s, report.batch_lines_per_s,
                                   strict=True), 1):
        out.append(f"  round {i}: direct {d:>8,.0f} lines/s, batch {b:>8,.0f} lines/s "
                   f"= {b / d:.1%}")
    out.append(f"  median: batch = {report.ratio:.1%} of direct (target >= 70 %)")
    bound_ms = report.max_batch * report.job_ms
    out.append(f"backfill: interactive at {report.rate:.0f} jobs/s (half of a pool of "
               f"{report.job_ms:g} ms a job, batches of up to {report.max_batch}: "
               f"{bound_ms:g} ms; backfill_batch {report.backfill_batch}), alone and beside a "
               "batch:")
    rises = []
    for i, r in enumerate(report.backfill, 1):
        rise = r.beside_p99_ms - r.alone_p99_ms
        rises.append(rise)
        out.append(f"  round {i}: p50/p99 alone {r.alone_p50_ms:.1f}/{r.alone_p99_ms:.1f} ms, "
                   f"beside {r.beside_p50_ms:.1f}/{r.beside_p99_ms:.1f} ms (+{rise:.1f} ms); "
                   f"pool busy {r.alone_busy:.0%} -> {r.beside_busy:.0%}, "
                   f"{r.batch_lines_answered} batch lines meanwhile")
    if report.backfill:
        allowed = max(0.2 * statistics.median(r.alone_p99_ms for r in report.backfill),
                      bound_ms)
        out.append(f"  median p99 rise {statistics.median(rises):.1f} ms (allowed: "
                   f"{allowed:.1f} ms, the larger of 20 % and one batch's service time)")
    out.append(json.dumps({**asdict(report), "ratio": round(report.ratio, 3)}))
    return "\n".join(out)

