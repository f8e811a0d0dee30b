"""Tenants are isolated: idempotency keys are theirs alone and hold across pools, a job
handle scoped to a tenant finds only its jobs, and names nobody configured make no state
of their own (issue 14, point 1)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys, SwitchyardConfig
from switchyard.broker.schemas import JobState, now_ms
from switchyard.dispatcher import AsyncClient, InvalidRequest, JobNotFound
from tests.conftest import make_config

pytestmark = pytest.mark.cluster

USER = [{"role": "user", "content": "hello"}]


async def test_tenants_never_share_an_idempotency_key(prefix: str, redis_url: str) -> None:
    config = make_config(prefix)
    async with AsyncClient(config, redis_url=redis_url) as client:
        a = await client.embed("echo", "a's text", idempotency_key="doc-42", tenant="alice")
        b = await client.embed("echo", "b's text", idempotency_key="doc-42", tenant="bob")
        again = await client.embed("echo", "x", idempotency_key="doc-42", tenant="alice")
        assert b.id != a.id and again.id == a.id
        # bob cannot see, cancel or wait on alice's job through a handle scoped to him
        theirs = client.job(a.id, tenant="bob")
        for call in (theirs.status(), theirs.cancel(), theirs.result(timeout=0.1)):
            with pytest.raises(JobNotFound):
                await call
        assert await client.job(a.id, tenant="alice").status() is JobState.QUEUED
        assert await client.job(a.id).status() is JobState.QUEUED  # trusted: no check
        with pytest.raises(JobNotFound):
            await client.job(a.id, tenant="alice-not").status()


def _overflow_config(prefix: str) -> SwitchyardConfig:
    return SwitchyardConfig.model_validate({
        "redis": {"prefix": prefix},
        "worker": {"heartbeat_s": 0.2, "heartbeat_ttl_s": 2},
        "providers": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "pools": {"local": {"engine": "echo", "partitions": 3},
                  "cloud": {"engine": "bridge", "partitions": 2,
                            "targets": [{"provider": "fake", "model": "m"}]}},
        "models": {"chat": {"pool": "local", "kind": "chat", "overflow": "cloud"}},
    })


async def _submit(config: SwitchyardConfig, redis_url: str, key: str) -> tuple[str, str]:
    """(job id, pool) of one submission, by a fresh client (no cached liveness)."""
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.chat("chat", USER, idempotency_key=key, tenant="acme")
    return job.id, job.id.split(".")[0]


@pytest.mark.parametrize("first_alive", [False, True])
async def test_an_idempotency_key_holds_across_the_overflow_pool(
    prefix: str, redis_url: str, aredis: aioredis.Redis, first_alive: bool,
) -> None:
    """Admitted on one pool, re-sent when the route picks the other: the same job."""
    config = _overflow_config(prefix)
    workers = Keys(prefix).pool("local").workers

    async def local_alive(alive: bool) -> None:
        if alive:
            await aredis.zadd(workers, {"w1": now_ms() + 60_000})
        else:
            await aredis.delete(workers)

    for n in range(5):  # several keys: they land on different partitions
        key = f"doc-{first_alive}-{n}"
        await local_alive(first_alive)
        first, pool = await _submit(config, redis_url, key)
        assert pool == ("local" if first_alive else "cloud")
        await local_alive(not first_alive)
        second, _ = await _submit(config, redis_url, key)
        assert second == first, "a second job was admitted under the same key"


async def test_a_key_whose_job_expired_admits_a_new_job(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config = make_config(prefix)
    async with AsyncClient(config, redis_url=redis_url) as client:
        first = await client.embed("echo", "x", idempotency_key="k")
        await aredis.delete(Keys(prefix).of_job(first.id).job(first.id))  # its record expired
        second = await client.embed("echo", "x", idempotency_key="k")
        assert second.id != first.id
        assert await second.status() is JobState.QUEUED  # not JobNotFound


def _tenant_config(prefix: str, unknown: str) -> SwitchyardConfig:
    data: dict[str, Any] = make_config(prefix).model_dump()
    data["tenants"] = {"acme": {"rps": 1000}, "default": {"rps": 1000}, "unknown": unknown}
    data.pop("unknown_tenants")
    return SwitchyardConfig.model_validate(data)


async def test_unconfigured_tenant_names_share_the_default_bucket(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config = _tenant_config(prefix, "default")
    async with AsyncClient(config, redis_url=redis_url) as client:
        for i in range(200):
            await client.embed("echo", "x", tenant=f"rotating-{i}")
        await client.embed("echo", "x", tenant="acme")
    names = {k.split(":tenant:")[1].split(":")[0]
             async for k in aredis.scan_iter(f"{prefix}:*:tenant:*")}
    assert names == {"default", "acme"}
    keys = Keys(prefix).partition("echo", 0)
    seen = await aredis.zrange(keys.tenants_seen, 0, -1)
    assert sorted(seen) == ["acme", "default"]
    # what workers count and label by (jobs in flight, spend, metrics) is bounded too
    entries = await aredis.xrange(keys.stream("standard"))
    assert {json.loads(fields["d"])["tenant"] for _, fields in entries} == {"default", "acme"}


async def test_unconfigured_tenants_can_be_refused(prefix: str, redis_url: str) -> None:
    config = _tenant_config(prefix, "reject")
    async with AsyncClient(config, redis_url=redis_url) as client:
        await client.embed("echo", "x", tenant="acme")
        await client.embed("echo", "x")  # no tenant named: the default one
        with pytest.raises(InvalidRequest, match="unknown tenant 'mallory'"):
            await client.embed("echo", "x", tenant="mallory")
