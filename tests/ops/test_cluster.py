"""Switchyard on a real Redis Cluster (3 masters, a replica each): the cluster URL, the
partitions' placement over the masters, a pool of several partitions served by one worker
(one blocking read per partition), and the node-level durable round trip."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from switchyard.broker import DurabilityUnavailable, Keys
from switchyard.broker.errors import RedisSettingsError
from switchyard.broker.keys import POOL_NAME, partition_tag
from switchyard.broker.settings import RedisSettings, is_cluster, redact_url
from switchyard.dispatcher import AsyncClient
from switchyard.ops.redis_cluster import RedisCluster
from switchyard.ops.status import collect, render
from switchyard.workers.engines import EchoEngine
from tests.conftest import StartWorker, make_config


def test_a_cluster_url_names_its_seed_nodes_and_credentials() -> None:
    settings = RedisSettings.from_url("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert settings.cluster and settings.nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert settings.display() == "redis+cluster://10.0.0.1:7000,::1:7001"
    assert "p%40ss" not in redact_url(settings.url)
    assert not RedisSettings.from_url("redis://h:1/0").cluster
    for bad in ("redis+cluster://h:1/2", "redis+cluster://h", "redis+cluster://h:1,:2",
                "redis+cluster://h:99999"):
        with pytest.raises(RedisSettingsError):
            RedisSettings.from_url(bad)


@given(st.from_regex(POOL_NAME, fullmatch=True), st.sampled_from([2, 3, 4, 6]),
       st.sampled_from([1, 2]))
def test_partitions_spread_evenly_over_masters_of_equal_slot_runs(
    pool: str, masters: int, per_master: int
) -> None:
    """As ``redis-cli --cluster create`` deals slots: master m holds an equal run."""
    tags = [partition_tag(pool, n) for n in range(masters * per_master)]
    assert tags[0] == f"{pool}.0"  # a single partition's keys never change
    holders = Counter(key_slot(t.encode()) * masters // 16384 for t in tags)
    assert sorted(holders.values()) == [per_master] * masters


@pytest.mark.parametrize("broker", ["cluster"], indirect=True)
async def test_a_pool_of_three_partitions_lives_on_three_masters_and_one_worker_serves_all(
    redis_cluster: RedisCluster, redis_url: str, prefix: str, start_worker: StartWorker
) -> None:
    base = make_config(prefix).model_dump()
    base["pools"]["echo"]["partitions"] = 3
    config = type(make_config(prefix)).model_validate(base)
    keys = Keys(prefix).partitions("echo", 3)
    masters = {redis_cluster.master_of(k.stream("standard")).port for k in keys}
    assert len(masters) == 3
    await start_worker(config, "echo", EchoEngine(delay_ms=5))
    async with AsyncClient(config, redis_url=redis_url) as client:
        assert is_cluster(client.redis)
        jobs = await asyncio.gather(*(client.embed("echo", f"t{i}", idempotency_key=f"k{i}")
                                      for i in range(60)))
        results = await asyncio.gather(*(job.result(timeout=30) for job in jobs))
        pools = await collect(client.redis, config)  # what `switchyard status` shows
    assert [r.echo for r in results] == [[f"t{i}"] for i in range(60)]  # type: ignore[union-attr]
    assert len({job.id.split(".")[1] for job in jobs}) == 3  # every partition took some
    shown = {s.partition: s.node for s in pools[0].streams}
    assert shown == {n: f"127.0.0.1:{redis_cluster.master_of(k.stream('standard')).port}"
                     for n, k in enumerate(keys)}
    assert "127.0.0.1:" in render(pools).splitlines()[1]


@pytest.mark.parametrize("broker", ["cluster"], indirect=True)
async def test_a_durable_enqueue_on_a_cluster_without_aof_is_refused(
    redis_url: str, prefix: str, aredis: aioredis.Redis
) -> None:
    async with AsyncClient(make_config(prefix), redis_url=redis_url) as client:
        with pytest.raises(DurabilityUnavailable, match="appendonly no"):
            await client.embed("echo", "x", durable=True)
    assert not await aredis.exists(Keys(prefix).partition("echo", 0).stream("standard"))


async def test_a_durable_enqueue_on_a_cluster_without_replicas_is_not_confirmed(
    tmp_path: Path, prefix: str
) -> None:
    """WAIT 1 is what makes a durable job survive its master: with no replica to
    acknowledge it, the caller is told at once, before anything is enqueued."""
    with RedisCluster(tmp_path / "c", masters=1, replicas=0, aof=True,
                      appendfsync="always") as cluster:
        async with AsyncClient(make_config(prefix), redis_url=cluster.url) as client:
            with pytest.raises(DurabilityUnavailable, match="no replica connected"):
                await client.embed("echo", "x", durable=True)
            job = await client.embed("echo", "y")  # not durable: admitted as ever
            assert await job.status() == "queued"
