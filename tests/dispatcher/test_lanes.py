"""The client's lanes (issue 15): what a plain admission onto one (model, priority,
tenant) needs, resolved once. Cached, they must still answer as the configuration and the
client's state say: a tenant given a bucket of its own later, several partitions in turn,
errors that leave nothing behind."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys, SwitchyardConfig
from switchyard.dispatcher import AsyncClient, InvalidRequest, UnknownModel
from tests.conftest import make_config


def _config(prefix: str, **pool: object) -> SwitchyardConfig:
    data = make_config(prefix, spread={"engine": "echo", **pool}).model_dump()
    data["tenants"] = {"default": {"rps": 1000}, "acme": {"rps": 1000}}
    data["unknown_tenants"] = "default"
    return SwitchyardConfig.model_validate(data)


async def test_a_lane_is_resolved_once_and_dropped_when_a_tenant_gets_its_own_bucket(
        prefix: str, redis_url: str, aredis: aioredis.Redis) -> None:
    config = _config(prefix)
    keys = Keys(prefix).partition("spread", 0)
    async with AsyncClient(config, redis_url=redis_url) as client:
        first = await client.embed("spread", "a", tenant="walk-in")
        lane = client._lanes.get("spread", "embed", "standard", "walk-in")
        assert client._lanes.get("spread", "embed", "standard", "walk-in") is lane
        assert lane.tenant == "default"  # an unconfigured name counts as default
        client.own_bucket("walk-in")  # (as the gateway does for a run-time key's tenant)
        second = await client.embed("spread", "b", tenant="walk-in")
    assert await aredis.hget(keys.job(first.id), "tenant") == "default"
    assert await aredis.hget(keys.job(second.id), "tenant") == "walk-in"


async def test_jobs_take_a_pools_partitions_in_turn_and_a_key_keeps_its_own(
        prefix: str, redis_url: str) -> None:
    config = _config(prefix, partitions=3)
    async with AsyncClient(config, redis_url=redis_url) as client:
        plain = [await client.embed("spread", f"t{i}") for i in range(6)]
        keyed = [await client.embed("spread", "k", idempotency_key="same") for _ in range(3)]
    assert sorted(job.id.split(".")[1] for job in plain) == ["0", "0", "1", "1", "2", "2"]
    assert len({job.id for job in keyed}) == 1


async def test_refused_calls_leave_no_lane(prefix: str, redis_url: str) -> None:
    data = _config(prefix).model_dump()
    data["unknown_tenants"] = "reject"
    config = SwitchyardConfig.model_validate(data)
    async with AsyncClient(config, redis_url=redis_url) as client:
        with pytest.raises(UnknownModel):
            await client.embed("nope", "x")
        with pytest.raises(InvalidRequest, match="unknown tenant"):
            await client.embed("spread", "x", tenant="stranger")
        with pytest.raises(InvalidRequest, match="serves embed requests"):
            await client.chat("spread", [{"role": "user", "content": "x"}])
        assert not client._lanes._lanes
        assert (await client.embed("spread", "x", tenant="acme")).id
        assert list(client._lanes._lanes) == [("spread", "embed", "standard", "acme")]
