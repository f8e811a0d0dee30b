"""The worker runtime against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from switchyard.broker import GROUP, JobEnvelope, Keys, RedisSettings, ServedBy, SwitchyardConfig
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.workers import EchoEngine, EngineOutput, Worker
from switchyard.workers.engines.base import Emit
from tests.conftest import StartWorker, make_config

pytestmark = pytest.mark.cluster


class RecordingEngine(EchoEngine):
    """Echo, remembering the priority of every job it ran and each batch's size."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.batches: list[int] = []

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        self.order += [job.priority for job in jobs]
        self.batches.append(len(jobs))
        return await super().run(jobs, served_by, emit)


class FailingEngine(EchoEngine):
    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        raise RuntimeError("CUDA error: device-side assert triggered")


async def _fill(client: AsyncClient, model: str, per_priority: int) -> list:
    jobs = []
    for priority in ("batch", "standard", "interactive"):
        jobs += [await client.embed(model, f"{priority}-{i}", priority=priority)  # type: ignore[arg-type]
                 for i in range(per_priority)]
    return jobs


@pytest.mark.parametrize("share", [0.0, 0.25])
async def test_priority_order_and_no_starvation(
    prefix: str, redis_url: str, start_worker: StartWorker, share: float
) -> None:
    config = make_config(prefix, p={"engine": "echo", "max_batch": 1, "lower_share": share})
    engine = RecordingEngine()
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = await _fill(client, "p", 20)
        await start_worker(config, "p", engine)
        await asyncio.gather(*(job.result(timeout=30) for job in jobs))
    order = engine.order
    assert len(order) == 60
    if share == 0.0:
        assert order == ["interactive"] * 20 + ["standard"] * 20 + ["batch"] * 20
    else:
        first_20 = order[:20]
        assert first_20[0] == "interactive"
        assert 10 <= first_20.count("interactive") <= 14
        assert "standard" in first_20 and "batch" in first_20  # none starves


async def test_batches_respect_the_size_bound(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    config = make_config(prefix, p={"engine": "echo", "max_batch": 7})
    engine = RecordingEngine()
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = await asyncio.gather(*(client.embed("p", f"x{i}") for i in range(100)))
        await start_worker(config, "p", engine)
        await asyncio.gather(*(job.result(timeout=30) for job in jobs))
    assert max(engine.batches) == 7 and sum(engine.batches) == 100


async def test_malformed_entry_is_dead_lettered_and_worker_keeps_serving(
    config: SwitchyardConfig, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis
) -> None:
    keys = Keys(config.redis.prefix).partition("echo", 0)
    await start_worker(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "first")  # creates the job record and reply stream
        await job.result(timeout=10)
        # A payload that is not an envelope, for a job whose record exists:
        bad_id = "echo.0.badbadbad"
        await aredis.hset(keys.job(bad_id), mapping={"state": "queued"})
        await aredis.xadd(keys.stream("standard"),
                          {"id": bad_id, "r": keys.reply(client.client_id), "d": "{not json"})
        # And an entry with no fields Switchyard knows:
        await aredis.xadd(keys.stream("standard"), {"junk": "1"})
        with pytest.raises(JobFailed, match="invalid job payload"):
            await client.job(bad_id).result(timeout=10)
        after = await client.embed("echo", "still serving")
        assert (await after.result(timeout=10)).echo == ["still serving"]
    for _ in range(100):
        if await aredis.xlen(keys.dead) == 2:
            break
        await asyncio.sleep(0.05)
    dead = await aredis.xrange(keys.dead)
    assert [fields["d"] for _, fields in dead] == ["{not json", ""]
    assert (await aredis.xpending(keys.stream("standard"), GROUP))["pending"] == 0


async def test_engine_failure_fails_the_jobs_with_a_clear_error(
    config: SwitchyardConfig, redis_url: str, start_worker: StartWorker
) -> None:
    await start_worker(config, "echo", FailingEngine())
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "x")
        with pytest.raises(JobFailed, match="device-side assert") as info:
            await job.result(timeout=10)
        assert info.value.code == "engine_error"


async def test_stop_releases_unstarted_entries(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis
) -> None:
    """Entries read into the carry-over buffer but never started go back on stop."""
    config = make_config(prefix, slow={"engine": "echo", "max_batch": 4, "delay_ms": 300})
    keys = Keys(prefix).partition("slow", 0)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = await _fill(client, "slow", 4)
        worker_redis = RedisSettings.from_url(redis_url).connect()
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(worker_redis, config, "slow", EchoEngine(300)).run(stop))
        await asyncio.sleep(0.15)  # first batch in flight, the rest buffered
        stop.set()
        stats = await asyncio.wait_for(task, 10)
        await worker_redis.aclose()
        assert stats.jobs == 4 and stats.released == 8
        pending = sum([(await aredis.xpending(s, GROUP))["pending"] for s in keys.streams()])
        assert pending == 0
        await start_worker(config, "slow")
        results = await asyncio.gather(*(job.result(timeout=30) for job in jobs))
        assert len(results) == 12


class LengthRecorder(EchoEngine):
    """Echo, with a cost by text length (like the embed engine), recording each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        return len(job.request.input), max(len(t) for t in job.request.input)

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        self.batches.append([job.request.input[0] for job in jobs])
        return await super().run(jobs, served_by, emit)


async def test_batches_are_packed_by_length_oldest_first(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    config = make_config(prefix, p={"engine": "echo", "max_batch": 4, "pack_window": 4})
    engine = LengthRecorder()
    texts = [("s" if i % 2 else "l" * 40) + str(i) for i in range(16)]  # short/long in turn
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.embed("p", t) for t in texts]
        await start_worker(config, "p", engine)
        await asyncio.gather(*(job.result(timeout=30) for job in jobs))
    assert sorted(t for b in engine.batches for t in b) == sorted(texts)
    for batch in engine.batches:
        assert len({len(t) > 10 for t in batch}) == 1, batch  # no short text padded to long
    assert engine.batches[0][0] == texts[0]  # the oldest job goes first
