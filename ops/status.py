"""`switchyard status`: per pool, partition and priority: depth, pending, oldest age,
dead letters, and the pool's live workers; on a Redis Cluster, the node (master) that
holds each partition."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.keys import GROUP, Keys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.schemas import PRIORITIES, now_ms
from switchyard.broker.settings import RedisSettings, is_cluster
from switchyard.broker.units import format_size

__all__ = ["PoolStatus", "StreamStatus", "add_parser", "collect"]


@dataclass(frozen=True)
class StreamStatus:
    partition: int
    priority: str
    depth: int
    """Entries not yet completed: waiting plus in flight (retry lane included)."""
    pending: int
    """Delivered to a worker, not yet acknowledged."""
    oldest_age_s: float | None
    retrying: int = 0
    """Of ``depth``, entries in the retry lane (re-queued; their age counts from then)."""
    node: str = ""
    """On a cluster: ``host:port`` of the master holding the partition ('' otherwise)."""


async def spend(redis: aioredis.Redis, config: SwitchyardConfig) -> dict[str, float]:
    """USD spent at providers, by ``provider:<name>`` and ``tenant:<name>``."""
    raw = await redis.hgetall(Keys(config.redis.prefix).spend)
    return {str(k): round(float(v), 6) for k, v in raw.items()}


@dataclass(frozen=True)
class PoolStatus:
    pool: str
    engine: str
    streams: list[StreamStatus]
    dead_letters: int
    workers: list[dict[str, str]]


async def collect(redis: aioredis.Redis, config: SwitchyardConfig) -> list[PoolStatus]:
    keys = Keys(config.redis.prefix)
    now = now_ms()
    pools = []
    for name, pool in config.pools.items():
        streams, dead = [], 0
        for part in keys.partitions(name, pool.partitions):
            pipe = redis.pipeline(transaction=False)
            for p in PRIORITIES:
                for stream in (part.retry(p), part.stream(p)):
                    pipe.xlen(stream)
                    pipe.xrange(stream, count=1)
                    pipe.xinfo_groups(stream)  # an error while the stream does not exist
            pipe.xlen(part.dead)
            replies = await pipe.execute(raise_on_error=False)
            node = _node_of(redis, part.stream("standard"))
            dead += int(replies[-1])
            for i, p in enumerate(PRIORITIES):
                retry, main = replies[6 * i: 6 * i + 3], replies[6 * i + 3: 6 * i + 6]
                ages = [a for a in (_age(retry[1], now), _age(main[1], now)) if a is not None]
                streams.append(StreamStatus(
                    part.partition, p, int(retry[0]) + int(main[0]),
                    _pending(retry[2]) + _pending(main[2]), max(ages, default=None),
                    int(retry[0]), node))
        pools.append(PoolStatus(name, pool.engine, streams, dead,
                                await _workers(redis, keys, name, config, now)))
    return pools


def _node_of(redis: aioredis.Redis, key: str) -> str:
    if not is_cluster(redis):
        return ""
    node = cast(aioredis.RedisCluster, redis).get_node_from_key(key)
    return "?" if node is None else str(node.name)


def _pending(groups: Any) -> int:
    if not isinstance(groups, list):
        return 0
    return sum(int(g["pending"]) for g in groups if g.get("name") == GROUP)


def _age(first: Any, now: int) -> float | None:
    if not isinstance(first, list) or not first:
        return None
    return max(0.0, (now - int(str(first[0][0]).split("-")[0])) / 1000)


async def _workers(redis: aioredis.Redis, keys: Keys, pool: str, config: SwitchyardConfig,
                   now: int) -> list[dict[str, str]]:
    alive_since = now - int(config.worker.heartbeat_ttl_s * 1000)
    names = await redis.zrangebyscore(keys.pool(pool).workers, alive_since, "+inf")
    out = []
    for name in names:
        info = await redis.hgetall(keys.pool(pool).worker(str(name)))
        if info:
            out.append({"consumer": str(name), **{str(k): str(v) for k, v in info.items()}})
    return out


def render(pools: list[PoolStatus]) -> str:
    nodes = any(s.node for pool in pools for s in pool.streams)
    lines = [f"{'pool':<12}{'part':>5} {'priority':<12}{'depth':>8}{'pending':>9}{'oldest':>10}"
             f"{'retrying':>10}" + ("  node" if nodes else "")]
    for pool in pools:
        for s in pool.streams:
            age = "-" if s.oldest_age_s is None else f"{s.oldest_age_s:.1f}s"
            lines.append(f"{pool.pool:<12}{s.partition:>5} {s.priority:<12}{s.depth:>8}"
                         f"{s.pending:>9}{age:>10}{s.retrying:>10}"
                         + (f"  {s.node}" if nodes else ""))
        lines.append(f"{'':<12}workers alive: {len(pool.workers)}; "
                     f"dead letters: {pool.dead_letters}")
        lines.extend(f"{'':<14}{_worker_line(w)}" for w in pool.workers)
    return "\n".join(lines)


def _worker_line(w: dict[str, str]) -> str:
    """consumer on device, model, last batch size; memory and utilisation where known."""
    parts = [f"{w['consumer']} on {w.get('device', '?')}", f"model {w.get('model', '?')}",
             f"batch {w.get('last_batch', '-')}/{w.get('max_batch', '?')}"]
    if w.get("memory_source") == "budget":
        parts.append(f"memory budget {format_size(int(w['budget_bytes']))} (fixed)")
    elif w.get("mem_total"):
        free, total, budget = (int(w[k]) for k in ("mem_free", "mem_total", "budget_bytes"))
        parts.append(f"memory {format_size(total - free)} used of {format_size(total)} "
                     f"({w.get('memory_source', '?')}), budget {format_size(budget)}")
    if w.get("gpu_util"):
        parts.append(f"GPU {float(w['gpu_util']):.0%} busy")
    if w.get("engine_health"):
        parts.append(_engine_load(w))
    return ", ".join(parts)


def _engine_load(w: dict[str, str]) -> str:
    """A served pool's engine: up or down, what it runs and queues, its cache use."""
    load = f"engine {w['engine_health']}: {w.get('engine_inflight', '0')} in flight"
    if w.get("engine_running"):
        load += (f", {w['engine_running']} running, {w.get('engine_waiting', '?')} waiting, "
                 f"KV cache {float(w.get('engine_kv') or 0):.0%}")
    return load


@dataclass(frozen=True)
class StatusOptions:
    config: str | None = None
    redis_url: str | None = None
    as_json: bool = False


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="queue depth, pending, oldest age and workers per pool")
    p.add_argument("--json", action="store_true", dest="as_json")
    p.add_argument("--config")
    p.add_argument("--redis-url")
    p.set_defaults(handler=lambda ns: status(StatusOptions(ns.config, ns.redis_url, ns.as_json)))


def status(options: StatusOptions) -> int:
    config = load_config(options.config)
    pools, spent = asyncio.run(_collect(config, resolve_redis_url(config, options.redis_url)))
    if options.as_json:
        print(json.dumps({"pools": [asdict(p) for p in pools], "spend_usd": spent}, indent=2))
    else:
        print(render(pools))
        if spent:
            print("spend (USD): " + ", ".join(f"{k} {v:.6f}" for k, v in sorted(spent.items())))
    return 0


async def _collect(config: SwitchyardConfig,
                   url: str) -> tuple[list[PoolStatus], dict[str, float]]:
    redis = RedisSettings.from_url(url).connect()
    try:
        return await collect(redis, config), await spend(redis, config)
    finally:
        await redis.aclose()
