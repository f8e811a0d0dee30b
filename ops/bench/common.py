"""Shared pieces of the benchmarks: a private Redis, a config file, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from switchyard.broker.config import SwitchyardConfig
from switchyard.ops.redis_server import RedisServer

__all__ = ["BenchEnv", "bench_env", "closed_loop", "percentile"]


@dataclass(frozen=True)
class BenchEnv:
    folder: Path
    redis_url: str
    config_path: Path
    config: SwitchyardConfig


@contextlib.contextmanager
def bench_env(config_toml: str, redis_url: str | None = None) -> Iterator[BenchEnv]:
    """A temp folder, a config file, and a private redis-server unless one is given."""
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        folder = Path(tmp)
        config_path = folder / "bench.toml"
        config_path.write_text(config_toml)
        config = SwitchyardConfig.model_validate(tomllib.loads(config_toml))
        if redis_url is not None:
            yield BenchEnv(folder, redis_url, config_path, config)
            return
        with RedisServer(folder / "redis") as server:
            yield BenchEnv(folder, server.url, config_path, config)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def closed_loop(n: int, concurrency: int,
                      one: Callable[[int], Awaitable[object]]) -> tuple[list[float], float]:
    """Run ``one(i)`` for i in 0..n-1 from ``concurrency`` tasks, each starting its next
    call when its last one returns: (latency of each call in ms, calls per second)."""
    todo = iter(range(n))
    latencies: list[float] = []

    async def lane() -> None:
        for i in todo:
            t0 = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies, n / (time.perf_counter() - start)
