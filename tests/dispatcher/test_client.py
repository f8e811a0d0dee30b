"""The enqueue API end to end against a real redis-server and an in-process echo worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from switchyard.broker import JobState, Keys, SwitchyardConfig, load_config, parse_stream_reply
from switchyard.dispatcher import (
    AdmissionRejected,
    AsyncClient,
    Client,
    InvalidRequest,
    JobCancelled,
    JobExpired,
    JobNotFound,
    ResultTimeout,
    UnknownModel,
)
from tests.conftest import StartWorker, make_config
from tests.workers.test_worker import RecordingEngine

pytestmark = pytest.mark.cluster


async def test_round_trip_through_the_queue(
    config: SwitchyardConfig, redis_url: str, start_worker: StartWorker
) -> None:
    worker = await start_worker(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", ["hello", "world"], priority="interactive")
        result = await job.result(timeout=10)
        assert result.echo == ["hello", "world"]
        assert result.served_by is not None and result.served_by.worker == worker.consumer
        assert await job.status() is JobState.SUCCEEDED


async def test_invalid_requests_are_rejected_before_enqueue(
    config: SwitchyardConfig, redis_url: str, aredis: aioredis.Redis
) -> None:
    async with AsyncClient(config, redis_url=redis_url) as client:
        with pytest.raises(UnknownModel, match="echo"):
            await client.embed("nope", "x")
        for bad in ([], [1, 2], None):
            with pytest.raises(InvalidRequest):
                await client.embed("echo", bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            await client.embed("echo", "x", priority="urgent")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            await client.embed("echo", "x", deadline_s=-1)
    assert await aredis.keys(f"{config.redis.prefix}:*") == []


async def test_over_the_cap_is_rejected_with_retry_after(
    prefix: str, redis_url: str
) -> None:
    config = make_config(prefix, capped={"engine": "echo", "caps": {"batch": 5}})
    async with AsyncClient(config, redis_url=redis_url) as client:
        for _ in range(5):
            await client.embed("capped", "x", priority="batch")
        with pytest.raises(AdmissionRejected) as info:
            await client.embed("capped", "x", priority="batch", max_retries=0)
        assert info.value.depth == 5 and info.value.cap == 5
        assert info.value.retry_after == config.jobs.idle_retry_after_s  # nothing drains
        await client.embed("capped", "x", priority="standard")  # other streams unaffected


async def test_idempotency_key_gives_the_same_job(
    config: SwitchyardConfig, redis_url: str, start_worker: StartWorker
) -> None:
    async with AsyncClient(config, redis_url=redis_url) as client:
        first = await client.embed("echo", "x", idempotency_key="order-42")
        second = await client.embed("echo", "y", idempotency_key="order-42")
        assert first.id == second.id
        await start_worker(config)
        assert (await second.result(timeout=10)).echo == ["x"]


async def test_cancel_a_queued_job(config: SwitchyardConfig, redis_url: str) -> None:
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "x")
        assert await job.cancel() is True
        assert await job.cancel() is False
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        assert await job.status() is JobState.CANCELLED


async def test_expired_deadline_fails_the_job(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    """Redis's clock expires the job, and the engine never runs it: the worker runs a
    batch only after start's verdicts, on the Redis clock."""
    config = make_config(prefix)
    engine = RecordingEngine()
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "x", deadline_s=0.05)
        await asyncio.sleep(0.2)
        worker = await start_worker(config, "echo", engine)
        with pytest.raises(JobExpired, match="deadline passed"):
            await job.result(timeout=10)
        assert await job.status() is JobState.EXPIRED
        assert worker.stats.jobs == 0  # no result written
        assert engine.order == []  # expired work is never run


async def test_result_timeout_and_unknown_job(config: SwitchyardConfig, redis_url: str) -> None:
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "x")
        with pytest.raises(ResultTimeout):
            await job.result(timeout=0.1)
        with pytest.raises(JobNotFound):
            await client.job("echo.0.deadbeef").status()


async def test_result_ttl(prefix: str, redis_url: str, start_worker: StartWorker,
                          aredis: aioredis.Redis) -> None:
    base = make_config(prefix)
    config = base.model_copy(update={"jobs": base.jobs.model_copy(update={"result_ttl_s": 0.5})})
    await start_worker(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "x")
        await job.result(timeout=10)
        ttl = await aredis.pttl(Keys(prefix).of_job(job.id).job(job.id))
        assert 0 < ttl <= 500
        await asyncio.sleep(0.7)
        with pytest.raises(JobNotFound):
            await client.job(job.id).status()


async def test_background_job_fetched_from_another_process(
    config: SwitchyardConfig, redis_url: str, start_worker: StartWorker
) -> None:
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "for later", priority="batch")
    await start_worker(config)
    script = (
        "import sys, json\n"
        "from switchyard.broker import SwitchyardConfig\n"
        "from switchyard.dispatcher import Client\n"
        "config = SwitchyardConfig.model_validate_json(sys.argv[1])\n"
        "with Client(config, redis_url=sys.argv[2]) as c:\n"
        "    print(json.dumps(c.job(sys.argv[3]).result(timeout=20).echo))\n"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, config.model_dump_json(), redis_url, job.id],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(out.stdout) == ["for later"]


def test_sync_client_wraps_the_async_one(config: SwitchyardConfig, redis_url: str) -> None:
    with Client(config, redis_url=redis_url) as client:
        job = client.embed("echo", "x")
        assert job.status() is JobState.QUEUED
        assert job.cancel() is True
        with pytest.raises(JobCancelled):
            job.result(timeout=5)


def test_sync_client_streams_a_chat_job(prefix: str, redis_url: str,
                                        tmp_config_file: Callable[[str], Path]) -> None:
    from switchyard.ops.processes import WorkerProcess

    path = tmp_config_file(f'[redis]\nprefix = "{prefix}"\n[pools.echo]\nengine = "echo"\n'
                           '[models.echo-chat]\npool = "echo"\nkind = "chat"\n')
    config = load_config(path, environ={})
    with WorkerProcess("echo", redis_url, path, config), \
            Client(config, redis_url=redis_url) as client:
        job = client.chat("echo-chat", [{"role": "user", "content": "a b c"}], stream=True)
        assert "".join(job) == "a b c"
        assert job.result(timeout=10).text == "a b c"


async def test_a_sized_cap_rejects_with_a_retry_after_from_it(
    prefix: str, redis_url: str, aredis: aioredis.Redis
) -> None:
    from switchyard.broker.schemas import now_ms

    config = make_config(prefix, sized={"engine": "echo", "wait_targets": {"standard": 0.5},
                                        "cap_floor": 1})
    drain = Keys(prefix).partition("sized", 0).drain("standard")
    await aredis.hset(drain, mapping={"rate": "8", "ws": now_ms()})  # 8/s x 0.5 s = 4
    async with AsyncClient(config, redis_url=redis_url) as client:
        for _ in range(4):
            await client.embed("sized", "x")
        with pytest.raises(AdmissionRejected) as info:
            await client.embed("sized", "x")
    assert info.value.cap == 4 and info.value.depth == 4
    assert info.value.retry_after == pytest.approx(1 / 8)  # one entry must drain first


async def test_a_deadline_the_queue_cannot_meet_is_rejected_at_admission(
    prefix: str, redis_url: str, aredis: aioredis.Redis
) -> None:
    from switchyard.broker.schemas import now_ms

    config = make_config(prefix)
    drain = Keys(prefix).partition("echo", 0).drain("standard")
    await aredis.hset(drain, mapping={"rate": "5", "ws": now_ms()})  # 5/s, no worker here
    async with AsyncClient(config, redis_url=redis_url) as client:
        for _ in range(20):
            await client.embed("echo", "backlog")
        with pytest.raises(AdmissionRejected) as info:
            await client.embed("echo", "hurried", deadline_s=1)
        patient = await client.embed("echo", "patient", deadline_s=20)
    assert info.value.reason == "deadline_unmeetable"
    # admitted only within deadline_share (0.3) of the deadline: 1 of the 20 may wait
    assert info.value.retry_after == pytest.approx((20 - 1 + 1) / 5)
    assert "before its deadline" in str(info.value)
    assert patient.position == 20
    assert patient.estimated_start_s == pytest.approx(20 / 5)  # position / drain rate


async def test_batch_jobs_retry_a_rejection_after_its_retry_after(
    prefix: str, redis_url: str
) -> None:
    config = make_config(prefix, capped={"engine": "echo", "caps": {"batch": 1}})
    config = config.model_copy(update={"jobs": config.jobs.model_copy(
        update={"idle_retry_after_s": 0.3})})
    async with AsyncClient(config, redis_url=redis_url) as client:
        first = await client.embed("capped", "x", priority="batch")
        with pytest.raises(AdmissionRejected):  # retries off for this call
            await client.embed("capped", "x", priority="batch", max_retries=0)

        async def free_the_slot() -> None:
            await asyncio.sleep(0.1)
            assert await first.cancel()

        started = asyncio.get_running_loop().time()
        _, second = await asyncio.gather(free_the_slot(),
                                         client.embed("capped", "y", priority="batch"))
        waited = asyncio.get_running_loop().time() - started
        assert second.id != first.id and 0.3 <= waited < 1.0  # one retry, after retry_after
        with pytest.raises(AdmissionRejected):  # never past the deadline
            await client.embed("capped", "z", priority="batch", deadline_s=0.2)


async def test_every_job_gets_a_deadline(prefix: str, redis_url: str,
                                         aredis: aioredis.Redis) -> None:
    config = make_config(prefix)
    async with AsyncClient(config, redis_url=redis_url) as client:
        before = time.time() * 1000
        await client.embed("echo", "x", priority="interactive")
        await client.embed("echo", "y", priority="batch", deadline_s=5)
    keys = Keys(prefix).partition("echo", 0)
    entries = {p: parse_stream_reply([[keys.stream(p), await aredis.xrange(keys.stream(p))]])
               for p in ("interactive", "batch")}
    default = json.loads(entries["interactive"][0].payload)["deadline_ms"]
    given = json.loads(entries["batch"][0].payload)["deadline_ms"]
    assert before + 59_000 < default <= time.time() * 1000 + 60_000  # the 60 s default
    assert before + 4_000 < given <= time.time() * 1000 + 5_000


async def test_lower_priorities_are_shed_first(prefix: str, redis_url: str,
                                               aredis: aioredis.Redis) -> None:
    from switchyard.broker.schemas import now_ms

    config = make_config(prefix, shedding={
        "engine": "echo", "shed_after_s": {"batch": 1.0, "standard": 2.0}})
    keys = Keys(prefix).partition("shedding", 0)
    for priority, rate in (("interactive", "4"), ("standard", "4"), ("batch", "2")):
        await aredis.hset(keys.drain(priority), mapping={"rate": rate, "ws": now_ms()})
    async with AsyncClient(config, redis_url=redis_url) as client:  # the pool drains 10/s

        async def admitted(priority: str) -> bool:
            try:
                await client.embed("shedding", "x", priority=priority,  # type: ignore[arg-type]
                                   max_retries=0)
                return True
            except AdmissionRejected as rejected:
                assert rejected.reason == "shed" and rejected.retry_after > 0
                return False

        for _ in range(11):  # 1.1 s of backlog: past batch's threshold only
            await client.embed("shedding", "backlog", priority="interactive")
        assert [await admitted(p) for p in ("batch", "standard", "interactive")] == [
            False, True, True]
        for _ in range(10):  # 2.3 s: standard goes too; interactive is never shed here
            await client.embed("shedding", "backlog", priority="interactive")
        assert [await admitted(p) for p in ("batch", "standard", "interactive")] == [
            False, False, True]
    with pytest.raises(ValidationError, match="batch first"):
        make_config(prefix, bad={"engine": "echo", "shed_after_s": {"batch": 5, "standard": 1}})
