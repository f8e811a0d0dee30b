"""`switchyard bench queue`: the platform's own overhead, measured with the echo engine,
in the shapes users write.

(a) burst: N jobs from 256 concurrent producer tasks; jobs/s from the first submit to the
    last result.
(b) chunked gather: ``await asyncio.gather(*[client.embed(...) for _ in range(500)])`` in
    a loop until N are submitted, then every result; jobs/s likewise.
(c) sync loop: one ``Client.embed(...)`` per job from a plain loop; enqueue calls/s (on a
    pool with no worker, so nothing competes with the caller), beside a bare sync redis-py
    loop of one ``EVALSHA`` round trip per call.
(d) light load: jobs at a steady rate; end-to-end latency p50/p99 (submit -> result), in
    stretches alternating with the floor's (``segments``, 5 by default).
Each beside a minimal raw redis-py loop (``ops/bench/raw.py``) on the same server,
measured right before it: the throughput ceiling (once before (a), again before (b)), the
one-round-trip call rate; the request/reply latency floor is measured alongside (d).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import EmbedResult
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.dispatcher.sync import Client
from switchyard.ops.bench.common import bench_env, percentile
from switchyard.ops.bench.raw import bare_evalsha, open_loop, raw_ceiling, raw_echo
from switchyard.ops.processes import WorkerProcess

__all__ = ["QueueBenchOptions", "QueueReport", "run_queue_bench"]

CONFIG = """
[redis]
prefix = "sybench"
[pools.echo]
engine = "echo"
max_batch = 100
[pools.echo.caps]
standard = 10000000
[models.echo]
pool = "echo"
[pools.unserved]
engine = "echo"
[pools.unserved.caps]
standard = 10000000
[models.unserved]
pool = "unserved"
"""

PAYLOAD = "the quick brown fox jumps over the lazy dog " * 2


@dataclass(frozen=True)
class QueueBenchOptions:
    jobs: int = 50_000
    producers: int = 256
    chunk: int = 500
    sync_calls: int = 5_000
    rate: float = 100.0
    seconds: float = 10.0
    segments: int = 5
    """Light load alternates this many stretches of the floor and of Switchyard."""
    redis_url: str | None = None


@dataclass(frozen=True)
class QueueReport:
    jobs: int
    producers: int
    raw_jobs_per_s: float
    burst_jobs_per_s: float
    burst_ratio: float
    chunk: int
    gather_raw_jobs_per_s: float
    """The raw ceiling measured again, right before the chunked gather."""
    gather_jobs_per_s: float
    gather_ratio: float
    sync_calls: int
    sync_calls_per_s: float
    bare_calls_per_s: float
    sync_ratio: float
    light_rate: float
    light_jobs: int
    light_p50_ms: float
    light_p99_ms: float
    raw_p50_ms: float
    raw_p99_ms: float


async def burst(config: SwitchyardConfig, url: str, n: int, producers: int) -> float:
    """n jobs submitted as fast as ``producers`` concurrent tasks can (as a service's request
    handlers would; the client coalesces their submissions), then every result collected."""
    jobs: list[AsyncJob[EmbedResult] | None] = [None] * n

    async def produce(first: int) -> None:
        for i in range(first, n, producers):
            jobs[i] = await client.embed("echo", PAYLOAD)

    async with AsyncClient(config, redis_url=url) as client, asyncio.timeout(600):
        start = time.perf_counter()
        await asyncio.gather(*(produce(p) for p in range(producers)))
        for job in jobs:
            assert job is not None
            await job.result()
        return n / (time.perf_counter() - start)


async def chunked_gather(config: SwitchyardConfig, url: str, n: int, chunk: int) -> float:
    """n jobs submitted ``chunk`` at a time with ``asyncio.gather``, then every result."""
    jobs: list[AsyncJob[EmbedResult]] = []
    async with AsyncClient(config, redis_url=url) as client, asyncio.timeout(600):
        start = time.perf_counter()
        for first in range(0, n, chunk):
            jobs += await asyncio.gather(*[client.embed("echo", PAYLOAD)
                                           for _ in range(min(chunk, n - first))])
        for job in jobs:
            await job.result()
        return n / (time.perf_counter() - start)


def sync_loop(config: SwitchyardConfig, url: str, n: int) -> float:
    """Enqueue calls/s of a plain loop, one sync ``embed`` per job (after one call that
    opens the client's connections)."""
    with Client(config, redis_url=url) as client:
        client.embed("unserved", PAYLOAD)
        start = time.perf_counter()
        for _ in range(n):
            client.embed("unserved", PAYLOAD)
        return n / (time.perf_counter() - start)


async def light_load(config: SwitchyardConfig, url: str, rate: float, seconds: float,
                     segments: int) -> tuple[list[float], list[float]]:
    """End-to-end latencies (ms) at a steady rate: (the raw floor's, Switchyard's), in
    ``segments`` alternating stretches of each, so that a drift of this shared machine's
    speed moves both alike."""
    async with AsyncClient(config, redis_url=url) as client, raw_echo(url, PAYLOAD) as raw:

        async def one() -> float:
            t0 = time.perf_counter()
            job = await client.embed("echo", PAYLOAD, priority="standard")
            await job.result(timeout=30)
            return (time.perf_counter() - t0) * 1000

        floor: list[float] = []
        ours: list[float] = []
        for _ in range(segments):
            floor += await open_loop(raw, rate, seconds / segments)
            ours += await open_loop(one, rate, seconds / segments)
        return floor, ours


def run_queue_bench(options: QueueBenchOptions) -> QueueReport:
    with bench_env(CONFIG, options.redis_url) as env:
        # Each shape right after its own baseline, so that a drift of this shared
        # machine's speed between them moves both (the worker idles meanwhile).
        bare = bare_evalsha(env.redis_url, options.sync_calls, PAYLOAD)
        sync = sync_loop(env.config, env.redis_url, options.sync_calls)
        with WorkerProcess("echo", env.redis_url, env.config_path, env.config):
            raw = raw_ceiling(env.redis_url, options.jobs, PAYLOAD)
            rate = asyncio.run(
                burst(env.config, env.redis_url, options.jobs, options.producers))
            raw_before_gather = raw_ceiling(env.redis_url, options.jobs, PAYLOAD)
            gathered = asyncio.run(
                chunked_gather(env.config, env.redis_url, options.jobs, options.chunk))
            raw_lat, lat = asyncio.run(light_load(env.config, env.redis_url, options.rate,
                                                  options.seconds, options.segments))
    return QueueReport(
        jobs=options.jobs, producers=options.producers, raw_jobs_per_s=round(raw),
        burst_jobs_per_s=round(rate),
        burst_ratio=round(rate / raw, 3), chunk=options.chunk,
        gather_raw_jobs_per_s=round(raw_before_gather), gather_jobs_per_s=round(gathered),
        gather_ratio=round(gathered / raw_before_gather, 3),
        sync_calls=options.sync_calls, sync_calls_per_s=round(sync),
        bare_calls_per_s=round(bare), sync_ratio=round(sync / bare, 3),
        light_rate=options.rate, light_jobs=len(lat),
        light_p50_ms=round(percentile(lat, 50), 3), light_p99_ms=round(percentile(lat, 99), 3),
        raw_p50_ms=round(percentile(raw_lat, 50), 3), raw_p99_ms=round(percentile(raw_lat, 99), 3),
    )


def render(report: QueueReport) -> str:
    return "\n".join([
        f"burst of {report.jobs} echo jobs from {report.producers} concurrent producers "
        "(first submit -> last result):",
        f"  raw redis-py Streams loop : {report.raw_jobs_per_s:>10,.0f} jobs/s  (ceiling)",
        f"  switchyard                : {report.burst_jobs_per_s:>10,.0f} jobs/s  "
        f"= {report.burst_ratio:.1%} of the ceiling",
        f"  raw loop again            : {report.gather_raw_jobs_per_s:>10,.0f} jobs/s  "
        "(ceiling, right before the gather)",
        f"  chunked gather ({report.chunk:>5})  : {report.gather_jobs_per_s:>10,.0f} jobs/s  "
        f"= {report.gather_ratio:.1%} of that ceiling",
        f"sync loop, one embed() per job, {report.sync_calls} calls (enqueue only):",
        f"  bare sync EVALSHA loop    : {report.bare_calls_per_s:>10,.0f} calls/s (one round "
        "trip each)",
        f"  switchyard Client.embed   : {report.sync_calls_per_s:>10,.0f} calls/s "
        f"= {report.sync_ratio:.1%} of the bare loop",
        f"light load, {report.light_rate:.0f} jobs/s, {report.light_jobs} jobs:",
        f"  raw redis-py request/reply : p50 {report.raw_p50_ms:.3f} ms, p99 "
        f"{report.raw_p99_ms:.3f} ms  (floor)",
        f"  switchyard end to end      : p50 {report.light_p50_ms:.3f} ms, p99 "
        f"{report.light_p99_ms:.3f} ms  = {report.light_p50_ms / report.raw_p50_ms:.2f}x the floor",
        json.dumps(asdict(report)),
    ])
