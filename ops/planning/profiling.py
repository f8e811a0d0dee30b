"""`switchyard profile --pool P`: measure a pool's service curve through the real queue.

For each batch size (1, 2, 4, ... up to the pool's ``max_batch``) one worker of the pool
is started with ``max_batch`` set to that size (and ``pack_window = 1``), and a backlog
is put in front of it: its saturated throughput, between the 10th and 90th percentile
finishes (the job records' ``finished`` times, on Redis's clock), gives the batch time at
that size, the platform's own per-batch cost included. Embed and echo pools are measured
at each ``--lengths`` input length (words per text); generate pools with a closed loop of
as many callers as the batch size (so that many sequences run), recording time to first
token and per output token; bridge pools with a closed loop of calls, recording latency
and errors per provider target.

A private redis-server is started unless ``--redis-url`` names one.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from switchyard.broker.config import ENGINE_KINDS, SwitchyardConfig
from switchyard.broker.schemas import ChatResult, EmbedResult
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.errors import JobError
from switchyard.ops.bench.common import percentile
from switchyard.ops.planning.profile import Point, Profile, TargetPoint, hardware, timestamp
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.redis_server import RedisServer

__all__ = ["batch_sizes", "measure"]


def batch_sizes(max_batch: int) -> list[int]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch]


@contextlib.contextmanager
def _scratch(url: str | None) -> Iterator[tuple[str, Path]]:
    """A temp folder for the workers' logs, and a private Redis in it unless ``url``."""
    with tempfile.TemporaryDirectory(prefix="switchyard-profile-") as tmp:
        if url is not None:
            yield url, Path(tmp)
            return
        with RedisServer(Path(tmp) / "redis") as server:
            yield server.url, Path(tmp)


def _open(config: SwitchyardConfig, pool: str) -> SwitchyardConfig:
    """The config the profiler submits with: no admission control on the pool (a backlog
    is the point), and a model routed to it."""
    data = config.model_dump()
    data["pools"][pool]["admission_control"] = False
    data["models"]["_profile"] = {"pool": pool, "kind": _kind(config, pool)}
    return SwitchyardConfig.model_validate(data)


def _kind(config: SwitchyardConfig, pool: str) -> str:
    """What the profiler sends the pool: embeddings where it serves them, else chats."""
    return "embed" if "embed" in ENGINE_KINDS[config.pools[pool].engine] else "chat"


def measure(config_path: Path, config: SwitchyardConfig, pool: str, *,
            redis_url: str | None = None, lengths: tuple[int, ...] = (16,),
            output_tokens: int = 32, jobs: int = 200) -> Profile:
    settings = config.pools[pool]
    env = {f"SWITCHYARD_POOLS__{pool.upper()}__PACK_WINDOW": "1"}
    points: list[Point] = []
    targets: list[TargetPoint] = []
    with _scratch(redis_url) as (url, folder):
        client_config = _open(config, pool)
        log = folder / f"worker-{pool}.log"
        if settings.engine == "bridge":
            with WorkerProcess(pool, url, config_path, config, env=env, log=log):
                targets = asyncio.run(_bridge(client_config, url, jobs))
        else:
            for b in batch_sizes(settings.max_batch):
                env[f"SWITCHYARD_POOLS__{pool.upper()}__MAX_BATCH"] = str(b)
                with WorkerProcess(pool, url, config_path, config, env=env, log=log):
                    for n in lengths:
                        points.append(asyncio.run(
                            _chat_point(client_config, url, b, n, output_tokens, jobs)
                            if _kind(config, pool) == "chat"
                            else _embed_point(client_config, url, b, n, jobs)))
    return Profile(pool=pool, engine=settings.engine, model=settings.model,
                   hardware=hardware(settings.device), created=timestamp(), points=points,
                   targets=targets)


async def _finished(client: AsyncClient, ids: list[str]) -> list[int]:
    out = []
    for i in range(0, len(ids), 1000):
        pipe = client.redis.pipeline(transaction=False)
        for job_id in ids[i:i + 1000]:
            pipe.hget(client.keys.of_job(job_id).job(job_id), "finished")
        out += [int(v) for v in await pipe.execute() if v]
    return sorted(out)


def _rate(finished: list[int]) -> float:
    """Jobs/s between the 10th and 90th percentile finishes."""
    low, high = len(finished) // 10, len(finished) * 9 // 10
    span = max(1, finished[high] - finished[low])
    return (high - low) * 1000 / span


async def _embed_point(config: SwitchyardConfig, url: str, batch: int, words: int,
                       jobs: int) -> Point:
    text = " ".join(["word"] * words)
    n = max(jobs, 20 * batch)
    async with AsyncClient(config, redis_url=url) as client:
        submitted = await asyncio.gather(*(client.embed("_profile", text, priority="batch",
                                                        deadline_s=3600) for _ in range(n)))
        for job in submitted:
            await job.result(timeout=600)
        rate = _rate(await _finished(client, [job.id for job in submitted]))
    return Point(batch=batch, input_tokens=words, jobs_per_s=round(rate, 3),
                 batch_ms=round(batch * 1000 / rate, 3))


async def _chat_point(config: SwitchyardConfig, url: str, batch: int, words: int,
                      tokens: int, jobs: int) -> Point:
    prompt = " ".join(["word"] * words)
    ttfts: list[float] = []
    per_token: list[float] = []
    out_tokens = 0
    async with AsyncClient(config, redis_url=url) as client:
        async def lane(count: int) -> None:
            nonlocal out_tokens
            for _ in range(count):
                t0 = time.perf_counter()
                job = await client.chat("_profile", [{"role": "user", "content": prompt}],
                                        max_tokens=tokens, deadline_s=3600)
                result: ChatResult = await job.result(timeout=600)
                took = (time.perf_counter() - t0) * 1000
                out_tokens += result.usage.output_tokens
                if result.ttft_ms is not None:
                    ttfts.append(result.ttft_ms)
                    if result.usage.output_tokens > 1:
                        per_token.append((took - result.ttft_ms)
                                         / (result.usage.output_tokens - 1))
        start = time.perf_counter()
        await asyncio.gather(*(lane(max(2, jobs // (4 * batch))) for _ in range(batch)))
        elapsed = time.perf_counter() - start
        done = batch * max(2, jobs // (4 * batch))
    rate = done / elapsed
    return Point(batch=batch, input_tokens=words, output_tokens=tokens,
                 jobs_per_s=round(rate, 3), batch_ms=round(batch * 1000 / rate, 3),
                 ttft_ms=round(statistics.median(ttfts), 3) if ttfts else None,
                 per_token_ms=round(statistics.median(per_token), 3) if per_token else None)


async def _bridge(config: SwitchyardConfig, url: str, jobs: int) -> list[TargetPoint]:
    latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
    errors: dict[tuple[str, str], int] = defaultdict(int)
    async with AsyncClient(config, redis_url=url) as client:
        async def one() -> None:
            t0 = time.perf_counter()
            job = await client.embed("_profile", "hello", deadline_s=120, max_retries=0)
            try:
                result: EmbedResult = await job.result(timeout=180)
            except JobError:
                errors["-", "-"] += 1
                return
            by = result.served_by
            where = (by.provider or "-", by.model or "-") if by else ("-", "-")
            latencies[where].append((time.perf_counter() - t0) * 1000)
        for _ in range(0, jobs, 8):
            await asyncio.gather(*(one() for _ in range(8)))
    return [TargetPoint(provider=p, model=m, jobs=len(v) + errors.get((p, m), 0),
                        latency_p50_ms=round(percentile(v, 50), 3),
                        latency_p99_ms=round(percentile(v, 99), 3),
                        error_rate=round(errors.get((p, m), 0) / max(1, len(v)), 4))
            for (p, m), v in latencies.items()] + (
        [TargetPoint(provider="-", model="-", jobs=errors["-", "-"], latency_p50_ms=0,
                     latency_p99_ms=0, error_rate=1.0)] if errors.get(("-", "-")) else [])
