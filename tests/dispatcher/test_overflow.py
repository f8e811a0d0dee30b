"""Overflow from a local pool to a provider pool: no live worker, a full pool, or a
predicted wait past the deadline sends the request to the bridge instead."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys, SwitchyardConfig
from switchyard.broker.schemas import now_ms
from switchyard.dispatcher import AsyncClient
from switchyard.ops.fake_provider import FakeProfile, FakeProvider
from switchyard.workers import EchoEngine, build_engine
from tests.conftest import StartWorker

pytestmark = pytest.mark.cluster

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(FakeProfile(latency_ms=5)) as server:
        yield server


def _config(prefix: str, fake: FakeProvider, **local: object) -> SwitchyardConfig:
    return SwitchyardConfig.model_validate({
        "redis": {"prefix": prefix},
        "worker": {"block_ms": 50, "heartbeat_s": 0.2, "heartbeat_ttl_s": 2},
        "providers": {"fake": {"kind": "openai", "base_url": fake.url}},
        "pools": {"local": {"engine": "echo", "max_batch": 1, **local},
                  "cloud": {"engine": "bridge", "targets": [{"provider": "fake",
                                                             "model": "m"}]}},
        "models": {"chat": {"pool": "local", "kind": "chat", "overflow": "cloud"}},
    })


async def _bridge(config: SwitchyardConfig, start_worker: StartWorker,
                  aredis: aioredis.Redis) -> None:
    await start_worker(config, "cloud", build_engine(config.pools["cloud"], config=config,
                                                     redis=aredis))


async def test_no_live_local_worker_sends_requests_to_providers(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fake: FakeProvider,
) -> None:
    config = _config(prefix, fake)
    await _bridge(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        result = await (await client.chat("chat", USER, max_tokens=3)).result(timeout=10)
    assert result.served_by is not None and result.served_by.pool == "cloud"
    assert result.text == "w1 w2 w3"


async def test_a_full_local_pool_spills_instead_of_rejecting(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fake: FakeProvider,
) -> None:
    config = _config(prefix, fake, caps={"standard": 2}, delay_ms=300)
    await start_worker(config, "local", EchoEngine(delay_ms=300))
    await _bridge(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("chat", USER, max_tokens=2) for _ in range(5)]
        pools = [(await job.result(timeout=10)).served_by.pool for job in jobs]  # type: ignore[union-attr]
    assert "local" in pools and "cloud" in pools
    assert pools.count("local") <= 3  # the cap (2) plus what the worker took meanwhile


async def test_a_wait_past_the_deadline_spills_and_a_patient_job_stays(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fake: FakeProvider,
) -> None:
    config = _config(prefix, fake)
    keys = Keys(prefix).partition("local", 0)
    await start_worker(config, "local", EchoEngine(delay_ms=200))
    await _bridge(config, start_worker, aredis)
    # The local pool drains 5 jobs/s (as its complete script measures) ...
    await aredis.hset(keys.drain("standard"), mapping={"rate": "5", "ws": now_ms(), "n": 0})
    async with AsyncClient(config, redis_url=redis_url) as client:
        backlog = [await client.chat("chat", USER, max_tokens=2) for _ in range(20)]
        assert all(job.id.startswith("local.") for job in backlog)  # ... and has 20 queued
        hurried = await client.chat("chat", USER, max_tokens=2, deadline_s=1)
        patient = await client.chat("chat", USER, max_tokens=2, deadline_s=60)
        assert (await hurried.result(timeout=10)).served_by.pool == "cloud"  # type: ignore[union-attr]
        assert patient.id.startswith("local.")


async def test_jobs_waiting_past_the_wait_limit_move_to_the_provider_pool(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fake: FakeProvider,
) -> None:
    from switchyard.broker import JobState

    config = _config(prefix, fake, wait_limit_s=0.3, pack_window=1)
    await start_worker(config, "local", EchoEngine(delay_ms=2_000))  # alive, but slow
    await _bridge(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client, \
            AsyncClient(config, redis_url=redis_url) as other:
        jobs = [await client.chat("chat", USER, max_tokens=2, stream=i == 4)
                for i in range(5)]
        assert all(job.id.startswith("local.") for job in jobs)
        streamed = "".join([d async for d in jobs[4]])
        results = [await job.result(timeout=15) for job in jobs]
        assert results[0].served_by and results[0].served_by.pool == "local"
        assert {r.served_by.pool for r in results[1:] if r.served_by} == {"cloud"}
        assert streamed == results[4].text == "w1 w2"
        assert await other.job(jobs[2].id).status() is JobState.SUCCEEDED  # follows it
        assert (await other.job(jobs[3].id).result(timeout=5)).text == "w1 w2"
