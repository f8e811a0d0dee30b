"""`switchyard bench queue`: the platform's own overhead, measured with the echo engine.

(a) burst: N jobs submitted at once; jobs/s from the first submit to the last result.
(b) light load: jobs at a steady rate; end-to-end latency p50/p99 (submit -> result).
Beside them, in the same run and on the same server, minimal raw redis-py Streams loops
(``ops/bench/raw.py``): the throughput ceiling and the latency floor.
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
from switchyard.ops.bench.common import bench_env, percentile
from switchyard.ops.bench.raw import open_loop, raw_ceiling, raw_latency
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
"""

PAYLOAD = "the quick brown fox jumps over the lazy dog " * 2


@dataclass(frozen=True)
class QueueBenchOptions:
    jobs: int = 50_000
    producers: int = 256
    rate: float = 100.0
    seconds: float = 10.0
    redis_url: str | None = None


@dataclass(frozen=True)
class QueueReport:
    jobs: int
    producers: int
    raw_jobs_per_s: float
    burst_jobs_per_s: float
    burst_ratio: float
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


async def light_load(
    config: SwitchyardConfig, url: str, rate: float, seconds: float
) -> list[float]:
    async with AsyncClient(config, redis_url=url) as client:

        async def one() -> float:
            t0 = time.perf_counter()
            job = await client.embed("echo", PAYLOAD, priority="standard")
            await job.result(timeout=30)
            return (time.perf_counter() - t0) * 1000

        return await open_loop(one, rate, seconds)


def run_queue_bench(options: QueueBenchOptions) -> QueueReport:
    with bench_env(CONFIG, options.redis_url) as env:
        raw = raw_ceiling(env.redis_url, options.jobs, PAYLOAD)
        raw_lat = asyncio.run(raw_latency(env.redis_url, options.rate, options.seconds, PAYLOAD))
        with WorkerProcess("echo", env.redis_url, env.config_path, env.config):
            rate = asyncio.run(
                burst(env.config, env.redis_url, options.jobs, options.producers))
            lat = asyncio.run(light_load(env.config, env.redis_url, options.rate, options.seconds))
    return QueueReport(
        jobs=options.jobs, producers=options.producers, raw_jobs_per_s=round(raw),
        burst_jobs_per_s=round(rate),
        burst_ratio=round(rate / raw, 3), light_rate=options.rate, light_jobs=len(lat),
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
        f"light load, {report.light_rate:.0f} jobs/s, {report.light_jobs} jobs:",
        f"  raw redis-py request/reply : p50 {report.raw_p50_ms:.3f} ms, p99 "
        f"{report.raw_p99_ms:.3f} ms  (floor)",
        f"  switchyard end to end      : p50 {report.light_p50_ms:.3f} ms, p99 "
        f"{report.light_p99_ms:.3f} ms  = {report.light_p50_ms / report.raw_p50_ms:.2f}x the floor",
        json.dumps(asdict(report)),
    ])
