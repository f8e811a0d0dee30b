"""`switchyard bench bridge`: what the provider bridge adds, and failover under fire.

Two fake providers run as their own processes (``switchyard fake-provider``, 50 ms
before the response headers by default). In the same run:

(a) direct: ``concurrency`` asyncio tasks call the primary fake with httpx (streaming
    chat completions, as the bridge does), ``requests`` calls in all: latency p50/p99,
    calls/s;
(b) bridged: the same load as chat jobs through Redis and one bridge worker process:
    latency submit -> result p50/p99, jobs/s; the added latency is (b) - (a);
(c) failover: ``failover_jobs`` jobs; when a third of them are done, the primary starts
    answering 503 to everything; the share of jobs that still succeed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import asdict, dataclass

import httpx

from switchyard.broker.config import SwitchyardConfig
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.errors import JobError
from switchyard.ops import fake_provider
from switchyard.ops.bench.common import bench_env, closed_loop, percentile
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.redis_server import free_port
from switchyard.workers.supervisor import stop_process

__all__ = ["BridgeBenchOptions", "BridgeReport", "run_bridge_bench"]

CONFIG = """
[redis]
prefix = "sybench"
[providers.primary]
kind = "openai"
base_url = "{primary}"
[providers.secondary]
kind = "openai"
base_url = "{secondary}"
[pools.cloud]
engine = "bridge"
max_batch = 64
[[pools.cloud.targets]]
provider = "primary"
model = "fake-a"
[[pools.cloud.targets]]
provider = "secondary"
model = "fake-b"
[pools.cloud.caps]
standard = 1000000
[models.cloud]
pool = "cloud"
kind = "chat"
"""

MESSAGES = [{"role": "user", "content": "tell me about message queues"}]


@dataclass(frozen=True)
class BridgeBenchOptions:
    requests: int = 2_000
    concurrency: int = 64
    latency_ms: float = 50.0
    failover_jobs: int = 3_000


@dataclass(frozen=True)
class BridgeReport:
    direct_p50_ms: float
    direct_p99_ms: float
    direct_per_s: float
    bridge_p50_ms: float
    bridge_p99_ms: float
    bridge_per_s: float
    failover_jobs: int
    failover_succeeded: int


class _Fake:
    """A fake provider in its own process, stopped by its PID."""

    def __init__(self, latency_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process = subprocess.Popen(fake_provider.command(self.port, latency_ms=latency_ms),
                                        stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/_stats", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.05)

    def profile(self, **fields: object) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_profile", json=fields, timeout=5)

    def stop(self) -> None:
        stop_process(self.process, 10)


async def direct(url: str, n: int, concurrency: int) -> tuple[list[float], float]:
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=url + "/", limits=limits, timeout=30) as http:
        body = {"model": "fake-a", "messages": MESSAGES, "max_tokens": 8, "stream": True,
                "stream_options": {"include_usage": True}}

        async def one(_: int = 0) -> None:
            async with http.stream("POST", "chat/completions", json=body) as response:
                async for _line in response.aiter_lines():
                    pass

        await one()
        return await closed_loop(n, concurrency, one)


async def bridged(env_url: str, config: SwitchyardConfig, n: int,
                  concurrency: int) -> tuple[list[float], float]:
    async with AsyncClient(config, redis_url=env_url) as client:
        async def one(_: int = 0) -> None:
            job = await client.chat("cloud", MESSAGES, max_tokens=8)
            await job.result(timeout=60)

        await one()
        return await closed_loop(n, concurrency, one)


async def failover(env_url: str, config: SwitchyardConfig, n: int, concurrency: int,
                   primary: _Fake) -> int:
    done = ok = 0
    async with AsyncClient(config, redis_url=env_url) as client:
        async def one(_: int) -> None:
            nonlocal done, ok
            job = await client.chat("cloud", MESSAGES, max_tokens=8)
            try:
                await job.result(timeout=60)
                ok += 1
            except JobError:
                pass
            done += 1
            if done == n // 3:
                await asyncio.to_thread(primary.profile, latency_ms=50, error_status=503)

        await closed_loop(n, concurrency, one)
    return ok


def run_bridge_bench(options: BridgeBenchOptions) -> BridgeReport:
    primary, secondary = _Fake(options.latency_ms), _Fake(options.latency_ms)
    try:
        toml = CONFIG.format(primary=primary.url, secondary=secondary.url)
        with bench_env(toml) as env, WorkerProcess("cloud", env.redis_url, env.config_path,
                                                   env.config):
            d_lat, d_rate = asyncio.run(direct(primary.url, options.requests,
                                               options.concurrency))
            b_lat, b_rate = asyncio.run(bridged(env.redis_url, env.config, options.requests,
                                                options.concurrency))
            ok = asyncio.run(failover(env.redis_url, env.config, options.failover_jobs,
                                      options.concurrency, primary))
    finally:
        primary.stop()
        secondary.stop()
    return BridgeReport(
        round(percentile(d_lat, 50), 2), round(percentile(d_lat, 99), 2), round(d_rate, 1),
        round(percentile(b_lat, 50), 2), round(percentile(b_lat, 99), 2), round(b_rate, 1),
        options.failover_jobs, ok)


def render(report: BridgeReport) -> str:
    r = report
    return "\n".join([
        f"direct httpx to the fake : p50 {r.direct_p50_ms:.2f} ms, p99 {r.direct_p99_ms:.2f} "
        f"ms, {r.direct_per_s:,.1f} calls/s",
        f"through the bridge      : p50 {r.bridge_p50_ms:.2f} ms, p99 {r.bridge_p99_ms:.2f} "
        f"ms, {r.bridge_per_s:,.1f} jobs/s (1 bridge process)",
        f"added by the bridge     : p50 {r.bridge_p50_ms - r.direct_p50_ms:+.2f} ms, "
        f"p99 {r.bridge_p99_ms - r.direct_p99_ms:+.2f} ms",
        f"failover (primary down after a third): {r.failover_succeeded}/{r.failover_jobs} "
        f"succeeded = {r.failover_succeeded / r.failover_jobs:.3%}",
        json.dumps(asdict(r)),
    ])
