"""The exporter's reading of Redis (on a single server and on a Redis Cluster: one
number a stream, every master's memory) and its bounded tenant labels."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import PRIORITIES
from switchyard.dispatcher.client import AsyncClient
from switchyard.ops.exporter import PlatformCollector, fold_tenants, read_snapshot
from tests.conftest import make_config

pytestmark = pytest.mark.cluster


def test_tenants_past_the_limit_fold_into_other() -> None:
    config = SwitchyardConfig.model_validate({
        "tenants": {"alpha": {}, "beta": {}}, "monitoring": {"max_tenants": 3}})
    spent = {"zed": 9.0, "yak": 5.0, "xeno": 1.0, "alpha": 0.5}
    # Configured tenants first (beta though it spent nothing), then the largest.
    assert fold_tenants(spent, config) == {"alpha": 0.5, "beta": 0.0, "zed": 9.0,
                                           "other": 6.0}
    many = {f"t{i:03d}": float(i) for i in range(500)}
    assert len(fold_tenants(many, config)) == 4  # 3 names and `other`, whatever comes


async def test_the_exporter_reads_each_stream_and_every_redis_node(
    redis_url: str, broker: str, prefix: str, aredis: aioredis.Redis
) -> None:
    config = make_config(prefix, echo={"engine": "echo", "partitions": 3})
    async with AsyncClient(config, redis_url=redis_url) as client:
        for i in range(6):
            await client.embed("echo", f"x{i}", priority=PRIORITIES[i % 3])
    snapshot = await read_snapshot(aredis, config)
    assert len(snapshot.nodes) == (3 if broker == "cluster" else 1)
    assert all("used_memory" in info for info in snapshot.nodes.values())
    admitted = sum(c.verdicts["admitted", ""] for c in snapshot.counters.values())
    assert admitted == 6 and len(snapshot.counters) == 3 * 3
    assert sum(s.depth for pool in snapshot.pools for s in pool.streams) == 6
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(config, redis_url))
    text = (await asyncio.to_thread(generate_latest, registry)).decode()  # (its own loop)
    assert text.count('switchyard_queue_depth{partition=') == 9
    assert 'switchyard_admission_total{partition="0",pool="echo",priority="interactive",' \
           'reason="",verdict="admitted"}' in text
    assert "switchyard_exporter_scrape_errors_total 0.0" in text
