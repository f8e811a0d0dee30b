"""Redis faults against real servers this test starts: the dispatcher fails fast and
typed when Redis is down or silent, and a Redis restarted under load (AOF on) loses no
admitted job: the worker keeps what it holds and finishes it once Redis is back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.broker import BrokerUnavailable
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher import AsyncClient
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.ops.redis_server import RedisServer, free_port
from switchyard.workers.engines.echo import EchoEngine
from switchyard.workers.runtime import Worker
from tests.conftest import make_config


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def test_enqueue_with_redis_down_raises_broker_unavailable_within_the_deadline(
    prefix: str, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "r").start()
    async with AsyncClient(make_config(prefix), redis_url=server.url) as client:
        await client.embed("echo", "while up")  # connected, then the server goes
        server.stop()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await client.embed("echo", "while down", deadline_s=2)
        assert time.monotonic() - started < 2


async def test_enqueue_to_a_silent_redis_raises_broker_unavailable_at_the_deadline(
    prefix: str, silent_port: int
) -> None:
    base = make_config(prefix).model_dump()
    base["redis"]["timeout_s"] = 1.0  # also bounds each step of closing the client
    config = type(make_config(prefix)).model_validate(base)
    async with AsyncClient(config, redis_url=f"redis://127.0.0.1:{silent_port}/0") as client:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=r"did not answer within 0\.5 s"):
            await client.embed("echo", "into the void", deadline_s=0.5)
        assert time.monotonic() - started < 1.5  # the deadline, plus scheduling slack


async def test_redis_restarted_under_load_loses_no_admitted_job(
    prefix: str, tmp_path: Path
) -> None:
    config = make_config(prefix, held={"engine": "echo", "max_batch": 16})
    server = RedisServer(tmp_path / "r", free_port(), aof=True).start()
    worker_redis = RedisSettings.from_url(server.url).connect()
    worker = Worker(worker_redis, config, "held", EchoEngine(delay_ms=20))
    stop = asyncio.Event()
    serving = asyncio.create_task(worker.run(stop))
    admitted: list[AsyncJob[object]] = []
    refused = 0
    try:
        async with AsyncClient(config, redis_url=server.url) as client:
            async def submit(n: int) -> None:
                nonlocal refused
                for i in range(n):
                    try:
                        admitted.append(await client.embed("held", f"j{len(admitted)}-{i}"))
                    except BrokerUnavailable:
                        refused += 1
                        await asyncio.sleep(0.05)

            await submit(300)
            restarting = asyncio.create_task(asyncio.to_thread(_restart, server))
            await submit(300)  # while Redis stops, is down, and comes back
            await restarting
            await submit(300)
            outcomes = [await job.outcome(timeout=60) for job in admitted]
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 30)
        await worker_redis.aclose()
        server.stop()
    assert len(admitted) + refused == 900 and len(admitted) >= 600
    assert [o.state for o in outcomes] == ["succeeded"] * len(admitted)
    assert len({o.id for o in outcomes}) == len(admitted)


def _restart(server: RedisServer) -> None:
    server.stop()  # SIGTERM: Redis writes its AOF and exits
    time.sleep(1.0)
    server.start()
