"""Shared pieces of the benchmarks: a private Redis, a config file, percentiles."""

from __future__ import annotations

import contextlib
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.config import SwitchyardConfig
from ops.redis_server import RedisServer

__all__ = ["BenchEnv", "bench_env", "percentile"]


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
