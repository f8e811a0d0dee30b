"""The ACL users `switchyard acl` prints (issue 14, point 1) are enough for each role,
on a real Redis: clients, a worker, a watchdog and the operator's commands each run
their whole flow under their own user, and Redis's ACL log records no denial."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from switchyard.broker import GROUP, Keys, SwitchyardConfig, ensure_groups
from switchyard.broker.apikeys import ApiKeyStore
from switchyard.broker.deadletters import list_dead
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.dispatcher.gateway.auth import Authenticator
from switchyard.ops.acl import ROLES, acl_rules
from switchyard.ops.redis_server import RedisServer
from switchyard.ops.status import _collect
from switchyard.workers.engines.echo import EchoEngine
from switchyard.workers.runtime import Worker
from switchyard.workers.watchdog import Watchdog


def _config(prefix: str) -> SwitchyardConfig:
    return SwitchyardConfig.model_validate({
        "redis": {"prefix": prefix, "timeout_s": 2},
        "worker": {"block_ms": 50, "heartbeat_s": 0.2, "heartbeat_ttl_s": 1},
        "watchdog": {"max_attempts": 1},
        "tenants": {"acme": {"rps": 1000}},
        "pools": {"echo": {"engine": "echo", "wait_targets": {"standard": 5},
                           "shed_after_s": {"batch": 30}}},
        "models": {"echo": {"pool": "echo"}}})


async def _flows(config: SwitchyardConfig, url: dict[str, str], prefix: str) -> None:
    keys = Keys(prefix).partition("echo", 0)
    wredis = RedisSettings.from_url(url["worker"]).connect()
    dredis = RedisSettings.from_url(url["watchdog"]).connect()
    stop = asyncio.Event()
    await ensure_groups(wredis, [keys])  # as a worker does first
    async with AsyncClient(config, redis_url=url["client"]) as client:
        queued = await client.embed("echo", "cancel me", tenant="acme")
        assert await client.job(queued.id, tenant="acme").cancel()
        lost = await client.embed("echo", "its worker dies", idempotency_key="k")
        assert (await client.embed("echo", "again", idempotency_key="k")).id == lost.id
        await wredis.xreadgroup(GROUP, "ghost", {keys.stream("standard"): ">"})
        await wredis.hset(keys.job(lost.id), "state", "running")  # started it, then died
        await Watchdog(dredis, config).sweep()  # max_attempts 1: dead-lettered
        with pytest.raises(JobFailed):
            await lost.result(timeout=5)
        worker = asyncio.create_task(Worker(wredis, config, "echo", EchoEngine()).run(stop))
        jobs = [await client.embed("echo", f"t{i}", tenant="acme") for i in range(5)]
        assert [(await j.result(timeout=10)).echo for j in jobs] == [[f"t{i}"] for i in range(5)]
        await Watchdog(dredis, config).sweep()
    stop.set()
    await asyncio.wait_for(worker, 10)
    await _collect(config, url["ops"])
    ops = RedisSettings.from_url(url["ops"]).connect()
    await _api_keys(config, ops, url["client"])
    assert [d.job_id for d in await list_dead(ops, [keys])] == [lost.id]
    for client_ in (wredis, dredis, ops):
        await client_.aclose()


async def _api_keys(config: SwitchyardConfig, ops: aioredis.Redis, client_url: str) -> None:
    """`switchyard keys` as ops; the gateway's lookups as the client role."""
    keys = Keys(config.redis.prefix)
    key, record = await ApiKeyStore(ops, keys).create("acme")
    assert [k.id for k in await ApiKeyStore(ops, keys).all()] == [record.id]
    gateway = RedisSettings.from_url(client_url).connect()
    auth = Authenticator(config, ApiKeyStore(gateway, keys))
    await auth.check_startable()
    assert await auth.tenant({"authorization": f"Bearer {key}"}) == ("acme", True)
    await ApiKeyStore(ops, keys).revoke(record.id)
    await gateway.aclose()


def test_each_role_runs_under_its_acl_user(tmp_path: Path) -> None:
    prefix = "acl"
    with RedisServer(tmp_path / "redis") as server:
        admin = redis.Redis(port=server.port, decode_responses=True)
        url = {}
        for role in ROLES:
            admin.execute_command("ACL", "SETUSER", role.name, *acl_rules(role, prefix),
                                  ">pw-" + role.name)
            url[role.name] = f"redis://{role.name}:pw-{role.name}@127.0.0.1:{server.port}/0"
        admin.execute_command("ACL", "LOG", "RESET")
        asyncio.run(_flows(_config(prefix), url, prefix))
        # (redis-py may try optional CLIENT subcommands on connect, SETINFO or
        # MAINT_NOTIFICATIONS; refused, it carries on: no role needs CLIENT)
        denied = [d for d in admin.execute_command("ACL", "LOG") if d["object"] != "client"]
        assert denied == [], [(d["username"], d["object"], d["reason"]) for d in denied]
        # and a role cannot step outside its grant
        client = redis.Redis.from_url(url["client"])
        for forbidden in (("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "1"),
                          ("KEYS", "*"), ("GET", "other:key")):
            try:
                client.execute_command(*forbidden)
                raise AssertionError(f"{forbidden} was allowed")
            except redis.exceptions.NoPermissionError:
                pass
        client.close()
        admin.close()
