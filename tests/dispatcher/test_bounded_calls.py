"""Every call is bounded and typed (issue 14, point 6): with Redis down or silent, a job's
status, polled result and cancel raise BrokerUnavailable within ``[redis] timeout_s``; a
retried rejection whose deadline ran out raises the rejection."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import types
from typing import Any

import pytest

from switchyard.broker import BrokerUnavailable, SwitchyardConfig
from switchyard.dispatcher import AdmissionRejected, AsyncClient
from switchyard.dispatcher import client as client_module
from switchyard.ops.redis_server import RedisServer
from tests.conftest import make_config


def _config(prefix: str) -> SwitchyardConfig:
    data = make_config(prefix).model_dump()
    data["redis"]["timeout_s"] = 0.5
    return SwitchyardConfig.model_validate(data)


@pytest.mark.parametrize("fault", ["down", "silent"])
async def test_job_calls_fail_typed_within_the_timeout(
    prefix: str, own_redis: RedisServer, fault: str,
) -> None:
    async with AsyncClient(_config(prefix), redis_url=own_redis.url) as client:
        job = client.job((await client.embed("echo", "x")).id)  # no reply waiter: polls
        assert own_redis.process is not None
        if fault == "down":
            own_redis.stop()
        else:
            os.kill(own_redis.process.pid, signal.SIGSTOP)
        for call in (job.status, job.cancel, lambda: job.result(timeout=10)):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await call()
            assert time.monotonic() - started < 2.0  # timeout_s (0.5) plus slack


async def test_a_retry_past_the_deadline_raises_the_rejection(
    prefix: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = make_config(prefix).model_dump()
    data["pools"]["echo"]["caps"] = {"batch": 0}  # every batch job is refused
    data["jobs"]["idle_retry_after_s"] = 0.05
    config = SwitchyardConfig.model_validate(data)

    async def late_sleep(seconds: float) -> None:  # a sleep that overshoots (a busy loop)
        await asyncio.sleep(seconds + 0.2)

    shim: Any = types.SimpleNamespace(**{n: getattr(asyncio, n) for n in dir(asyncio)
                                         if not n.startswith("__")})
    shim.sleep = late_sleep
    monkeypatch.setattr(client_module, "asyncio", shim)
    async with AsyncClient(config, redis_url=redis_url) as client:
        with pytest.raises(AdmissionRejected):
            await client.embed("echo", "x", priority="batch", deadline_s=0.2, max_retries=3)
