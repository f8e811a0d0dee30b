"""Honest deadlines with the default configuration (issue 14, point 7): admission predicts
a start behind the higher priorities, deadlines come from the Redis clock, and a caller
is answered at a start deadline no worker met, even with no watchdog."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys
from switchyard.broker.schemas import JobState, now_ms
from switchyard.dispatcher import AdmissionRejected, AsyncClient, JobExpired
from switchyard.dispatcher import client as client_module
from switchyard.workers.engines.echo import EchoEngine
from tests.conftest import StartWorker, make_config

USER = [{"role": "user", "content": "hi"}]


async def test_the_prediction_counts_the_higher_priorities_served_first(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    """The pool drains 10/s, 8 of them interactive: a batch job waits behind the queued
    interactive ones at the 2/s left to it. Its own stream is empty, yet it cannot start
    within its deadline's share, so it is refused rather than admitted to expire."""
    config = make_config(prefix)
    keys = Keys(prefix).partition("echo", 0)
    now = now_ms()
    await aredis.hset(keys.drain("interactive"), mapping={"rate": "8", "ws": now})
    await aredis.hset(keys.drain("batch"), mapping={"rate": "2", "ws": now})
    async with AsyncClient(config, redis_url=redis_url) as client:
        for _ in range(10):
            await client.embed("echo", "urgent", priority="interactive", deadline_s=30)
        with pytest.raises(AdmissionRejected) as refused:
            await client.embed("echo", "later", priority="batch", deadline_s=2, max_retries=0)
        patient = await client.embed("echo", "later", priority="batch", deadline_s=60)
    assert refused.value.reason == "deadline_unmeetable"
    assert patient.estimated_start_s == pytest.approx(10 / 2)  # behind 10, at 2/s


async def test_a_slow_client_clock_changes_no_deadline(
    prefix: str, redis_url: str, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client whose clock is 30 s behind: its jobs' deadlines are set by Redis."""
    config = make_config(prefix)
    real = client_module.now_ms
    monkeypatch.setattr(client_module, "now_ms", lambda: real() - 30_000)
    await start_worker(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "x", deadline_s=10)
        assert (await job.result(timeout=10)).echo == ["x"]  # type: ignore[union-attr]
        assert job.deadline_ms is not None and abs(job.deadline_ms - (real() + 10_000)) < 2_000


async def test_a_job_nobody_starts_is_answered_at_its_deadline_without_a_watchdog(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config = make_config(prefix)  # no worker, no watchdog
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "x", deadline_s=0.5)
        stream = await client.chat("echo-chat", USER, deadline_s=0.5, stream=True)
        started = time.monotonic()
        with pytest.raises(JobExpired):
            await job.result(timeout=30)
        with pytest.raises(JobExpired):
            async for _ in stream:
                pass
        assert time.monotonic() - started < 1.5  # the deadline, plus at most a second
        assert await job.status() is JobState.EXPIRED
        polled = client.job((await client.embed("echo", "y", deadline_s=0.5)).id)
        with pytest.raises(JobExpired):
            await polled.result(timeout=30)  # a handle by id learns the deadline too
    keys = Keys(prefix).partition("echo", 0)
    assert await aredis.xlen(keys.stream("standard")) == 0  # entries gone with them


async def test_a_job_that_started_runs_to_its_end_past_its_deadline(
    prefix: str, redis_url: str, start_worker: StartWorker,
) -> None:
    config = make_config(prefix)
    await start_worker(config, "echo", EchoEngine(delay_ms=800))
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("echo", "slow", deadline_s=0.3)
        await asyncio.sleep(0.1)
        assert (await job.result(timeout=10)).echo == ["slow"]  # type: ignore[union-attr]
