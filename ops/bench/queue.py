"""`switchyard bench queue`: the platform's own overhead, measured with the echo engine.

(a) burst: N jobs submitted at once; jobs/s from the first submit to the last result.
(b) light load: jobs at a steady rate; end-to-end latency p50/p99 (submit -> result).
Beside them, in the same run and on the same server, the ceiling: a minimal raw redis-py
Streams loop (pipelined XADD, XREADGROUP COUNT 100, XACK, a result write).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from broker.config import SwitchyardConfig
from dispatcher.client import AsyncClient
from ops.bench.common import bench_env, percentile
from ops.processes import WorkerProcess

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
    rate: float = 100.0
    seconds: float = 10.0
    redis_url: str | None = None


@dataclass(frozen=True)
class QueueReport:
    jobs: int
    raw_jobs_per_s: float
    burst_jobs_per_s: float
    burst_ratio: float
    light_rate: float
    light_jobs: int
    light_p50_ms: float
    light_p99_ms: float


def raw_ceiling(url: str, n: int) -> float:
    """Jobs/s of the bare Streams loop: produce n entries, then consume them in 100s."""
    r = redis.Redis.from_url(url, decode_responses=True)
    stream, group = "bench-raw:q", "g"
    r.delete(stream)
    r.xgroup_create(stream, group, id="0", mkstream=True)
    start = time.perf_counter()
    for chunk in range(0, n, 1_000):
        pipe = r.pipeline(transaction=False)
        for i in range(chunk, min(n, chunk + 1_000)):
            pipe.xadd(stream, {"id": str(i), "d": PAYLOAD})
        pipe.execute()
    done = 0
    while done < n:
        reply: Any = r.xreadgroup(group, "c", {stream: ">"}, count=100)
        entries = reply[0][1]
        pipe = r.pipeline(transaction=False)
        for _, fields in entries:
            pipe.set(f"bench-raw:res:{fields['id']}", fields["d"], ex=60)
        pipe.xack(stream, group, *[e[0] for e in entries])
        pipe.execute()
        done += len(entries)
    elapsed = time.perf_counter() - start
    r.close()
    return n / elapsed


async def burst(config: SwitchyardConfig, url: str, n: int) -> float:
    async with AsyncClient(config, redis_url=url) as client:
        start = time.perf_counter()
        jobs = await asyncio.gather(*(client.embed("echo", PAYLOAD) for _ in range(n)))
        await asyncio.gather(*(job.result(timeout=300) for job in jobs))
        return n / (time.perf_counter() - start)


async def light_load(
    config: SwitchyardConfig, url: str, rate: float, seconds: float
) -> list[float]:
    latencies: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        job = await client.embed("echo", PAYLOAD, priority="standard")
        await job.result(timeout=30)
        latencies.append((time.perf_counter() - t0) * 1000)

    async with AsyncClient(config, redis_url=url) as client:
        for _ in range(20):  # warm the connection pool and reply reader
            await one()
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def run_queue_bench(options: QueueBenchOptions) -> QueueReport:
    with bench_env(CONFIG, options.redis_url) as env:
        raw = raw_ceiling(env.redis_url, options.jobs)
        with WorkerProcess("echo", env.redis_url, env.config_path, env.config):
            rate = asyncio.run(burst(env.config, env.redis_url, options.jobs))
            lat = asyncio.run(light_load(env.config, env.redis_url, options.rate, options.seconds))
    return QueueReport(
        jobs=options.jobs, raw_jobs_per_s=round(raw), burst_jobs_per_s=round(rate),
        burst_ratio=round(rate / raw, 3), light_rate=options.rate, light_jobs=len(lat),
        light_p50_ms=round(percentile(lat, 50), 3), light_p99_ms=round(percentile(lat, 99), 3),
    )


def render(report: QueueReport) -> str:
    return "\n".join([
        f"burst of {report.jobs} echo jobs (first submit -> last result):",
        f"  raw redis-py Streams loop : {report.raw_jobs_per_s:>10,.0f} jobs/s  (ceiling)",
        f"  switchyard                : {report.burst_jobs_per_s:>10,.0f} jobs/s  "
        f"= {report.burst_ratio:.1%} of the ceiling",
        f"light load, {report.light_rate:.0f} jobs/s, {report.light_jobs} jobs:",
        f"  end-to-end latency p50 {report.light_p50_ms:.3f} ms, p99 {report.light_p99_ms:.3f} ms",
        json.dumps(asdict(report)),
    ])
