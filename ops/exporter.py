"""`switchyard exporter [--port 9200]`: the platform's numbers, read from Redis on each
scrape, so any number of exporters serve the same numbers and none keeps state.

Per pool, partition and priority (labels ``pool``, ``partition``, ``priority``):

- ``switchyard_queue_depth``, ``switchyard_queue_pending``, ``switchyard_queue_retrying``,
  ``switchyard_queue_oldest_age_seconds``: as `switchyard status` shows them;
- ``switchyard_queue_cap``: the cap admission applied last (the fixed cap until then);
- ``switchyard_queue_drain_rate``: jobs/s drained over the last window (0 when idle);
- ``switchyard_drained_total``, ``switchyard_admission_total{verdict, reason}``: counted
  by the scripts (one increment per call and verdict), ``verdict="spill"`` being spills;
- ``switchyard_arrivals_last_hour`` and ``switchyard_arrival_tokens_last_hour``: jobs
  offered in the last hour and their tokens (gauges: a rolling sum of the per-minute
  ring; per minute: ``switchyard_arrivals_last_minute`` and
  ``switchyard_arrival_tokens_last_minute``, the last full minute).

Per pool: ``switchyard_dead_letters`` (entries in its dead-letter streams),
``switchyard_workers_alive``, ``switchyard_recommended_workers`` (``ops/plan.py``, from
the last full minute's arrivals). Per provider target: ``switchyard_breaker_open`` (1 while
not closed), ``switchyard_breaker_trips_total``; per provider:
``switchyard_provider_pause_seconds`` (left of a pause it announced),
``switchyard_provider_spend_usd_total``; per tenant: ``switchyard_tenant_spend_usd_total``
(at most ``[monitoring] max_tenants`` names, the rest as ``other``). Per Redis node
(``node``): ``switchyard_redis_memory_used_bytes``, ``switchyard_redis_maxmemory_bytes``,
``switchyard_redis_connected_clients``, ``switchyard_redis_evicted_keys_total``. And
``switchyard_exporter_scrape_errors_total``: scrapes whose Redis reads failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from switchyard.broker import logs
from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import REDIS_FAILURES
from switchyard.broker.keys import Keys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.schemas import PRIORITIES, now_ms
from switchyard.broker.settings import RedisSettings, is_cluster
from switchyard.broker.stats import StreamCounters, read_counters
from switchyard.ops.plan import advice
from switchyard.ops.status import PoolStatus, collect, spend

__all__ = ["PlatformCollector", "Snapshot", "add_parser", "read_snapshot"]

log = logging.getLogger("switchyard.exporter")
_STREAM = ("pool", "partition", "priority")


@dataclass(frozen=True)
class Snapshot:
    """One read of everything the exporter serves (``switchyard top`` shows it too)."""

    pools: list[PoolStatus]
    counters: dict[tuple[str, int, str], StreamCounters]
    """(pool, partition, priority) -> the stream's counters."""
    spent: dict[str, float]
    """USD by ``provider:<name>`` and ``tenant:<name>``."""
    breakers: dict[tuple[str, str], dict[str, str]]
    """(provider, model) -> its breaker hash."""
    pauses: dict[str, float]
    """Seconds left of each provider's announced pause."""
    nodes: dict[str, dict[str, Any]]
    """``INFO`` of each Redis node (each master of a cluster), by ``host:port``."""
    at_ms: int


async def read_snapshot(redis: aioredis.Redis, config: SwitchyardConfig) -> Snapshot:
    keys, now = Keys(config.redis.prefix), now_ms()
    pools = await collect(redis, config)
    streams = [(name, n, p) for name, pool in config.pools.items()
               for n in range(pool.partitions) for p in PRIORITIES]
    read = await read_counters(redis, [keys.partition(name, n).drain(p)
                                       for name, n, p in streams], now)
    targets = sorted({(t.provider, t.model) for pool in config.pools.values()
                      for t in pool.targets})
    providers = sorted({p for p, _ in targets})
    pipe = redis.pipeline(transaction=False)  # (one round trip, a node each on a cluster)
    for provider, model in targets:
        pipe.hgetall(keys.breaker(provider, model))
    for provider in providers:
        pipe.hget(keys.rate_limit(provider), "pause_until")
    replies = await pipe.execute()
    breakers = {target: {str(k): str(v) for k, v in reply.items()}
                for target, reply in zip(targets, replies, strict=False)}
    pauses = {provider: max(0.0, (int(until or 0) - now) / 1000)
              for provider, until in zip(providers, replies[len(targets):], strict=True)}
    return Snapshot(pools, dict(zip(streams, read, strict=True)), await spend(redis, config),
                    breakers, pauses, await _nodes(redis), now)


def cap_in_force(config: SwitchyardConfig, pool: str, priority: str,
                 counters: StreamCounters) -> int:
    """The cap admission applies to a stream: the one it last sized, else the config's."""
    return counters.cap if counters.cap is not None else int(
        getattr(config.pools[pool].caps, priority))


def last_minute(s: Snapshot) -> int:
    """The last full minute before the snapshot (epoch minutes)."""
    return s.at_ms // 60_000 - 1


async def _nodes(redis: aioredis.Redis) -> dict[str, dict[str, Any]]:
    """INFO of each Redis node (each master of a cluster), by ``host:port``."""
    if is_cluster(redis):
        cluster = cast(aioredis.RedisCluster, redis)
        return {str(node.name): await cluster.info(target_nodes=node)
                for node in cluster.get_primaries()}
    kwargs = redis.connection_pool.connection_kwargs
    return {f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}": await redis.info()}


class PlatformCollector(Collector):
    """Reads a :class:`Snapshot` on each scrape (from the scrape's thread)."""

    def __init__(self, config: SwitchyardConfig, url: str) -> None:
        self.config, self.url = config, url
        self.errors = 0
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # (one scrape at a time reads Redis)
            try:
                snapshot = asyncio.run(self._read())
            except REDIS_FAILURES as exc:
                self.errors += 1
                log.warning("scrape failed: %s", exc)
                snapshot = None
        errors = CounterMetricFamily("switchyard_exporter_scrape_errors",
                                     "Scrapes whose Redis reads failed")
        errors.add_metric([], self.errors)
        yield errors
        if snapshot is not None:
            yield from families(snapshot, self.config)

    async def _read(self) -> Snapshot:
        redis = RedisSettings.from_url(self.url).connect(max_connections=8)
        try:
            return await read_snapshot(redis, self.config)
        finally:
            await redis.aclose()


def families(s: Snapshot, config: SwitchyardConfig) -> Iterator[Metric]:
    yield from _queue_families(s, config)
    dead = GaugeMetricFamily("switchyard_dead_letters", "Entries in dead-letter streams",
                             labels=["pool"])
    alive = GaugeMetricFamily("switchyard_workers_alive", "Workers with a live heartbeat",
                              labels=["pool"])
    for pool in s.pools:
        dead.add_metric([pool.pool], pool.dead_letters)
        alive.add_metric([pool.pool], len(pool.workers))
    yield dead
    yield alive
    yield _recommended(s, config)
    yield from _provider_families(s, config)
    yield from _redis_families(s)


def _recommended(s: Snapshot, config: SwitchyardConfig) -> Metric:
    """Workers each pool needs for the jobs offered in the last full minute (see
    ``ops/plan.py``)."""
    family = GaugeMetricFamily("switchyard_recommended_workers",
                               "Workers the pool needs for the last full minute's load "
                               "(Erlang C against its interactive wait target)",
                               labels=["pool"])
    minute = last_minute(s)
    for pool in s.pools:
        jobs = sum(c.jobs_in(minute).jobs for (name, _, _), c in s.counters.items()
                   if name == pool.pool)
        family.add_metric([pool.pool], advice(config, pool, jobs / 60).recommended)
    return family


def _queue_families(s: Snapshot, config: SwitchyardConfig) -> Iterator[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=list(_STREAM))
    depth = gauge("switchyard_queue_depth", "Jobs queued or in flight")
    pending = gauge("switchyard_queue_pending", "Delivered to a worker, not yet acknowledged")
    retrying = gauge("switchyard_queue_retrying", "Of the depth, jobs in the retry lane")
    oldest = gauge("switchyard_queue_oldest_age_seconds", "Age of the oldest job queued")
    for pool in s.pools:
        for st in pool.streams:
            labels = [pool.pool, str(st.partition), st.priority]
            depth.add_metric(labels, st.depth)
            pending.add_metric(labels, st.pending)
            retrying.add_metric(labels, st.retrying)
            oldest.add_metric(labels, st.oldest_age_s or 0.0)
    cap = gauge("switchyard_queue_cap", "The admission cap in force")
    rate = gauge("switchyard_queue_drain_rate", "Jobs/s drained (0 when idle)")
    last_jobs = gauge("switchyard_arrivals_last_minute", "Jobs offered in the last full minute")
    last_tokens = gauge("switchyard_arrival_tokens_last_minute",
                        "Tokens of the jobs offered in the last full minute")
    drained = CounterMetricFamily("switchyard_drained", "Jobs drained", labels=list(_STREAM))
    arrivals = gauge("switchyard_arrivals_last_hour", "Jobs offered within the last hour")
    tokens = gauge("switchyard_arrival_tokens_last_hour",
                   "Tokens of the jobs offered within the last hour")
    verdicts = CounterMetricFamily("switchyard_admission", "Jobs answered by admission",
                                   labels=[*_STREAM, "verdict", "reason"])
    minute = last_minute(s)
    for (name, n, p), c in s.counters.items():
        labels = [name, str(n), p]
        cap.add_metric(labels, cap_in_force(config, name, p, c))
        rate.add_metric(labels, c.drain_rate)
        drained.add_metric(labels, c.drained)
        arrivals.add_metric(labels, sum(m.jobs for m in c.minutes))
        tokens.add_metric(labels, sum(m.tokens for m in c.minutes))
        last = c.jobs_in(minute)
        last_jobs.add_metric(labels, last.jobs)
        last_tokens.add_metric(labels, last.tokens)
        for (verdict, reason), count in sorted(c.verdicts.items()):
            verdicts.add_metric([*labels, verdict, reason], count)
    yield from (depth, pending, retrying, oldest, cap, rate, last_jobs, last_tokens, drained,
                arrivals, tokens, verdicts)


def _provider_families(s: Snapshot, config: SwitchyardConfig) -> Iterator[Metric]:
    opened = GaugeMetricFamily("switchyard_breaker_open",
                               "1 while a provider target's breaker is not closed",
                               labels=["provider", "model"])
    trips = CounterMetricFamily("switchyard_breaker_trips", "Times a breaker opened",
                                labels=["provider", "model"])
    for (provider, model), b in s.breakers.items():
        opened.add_metric([provider, model], 0 if b.get("state", "closed") == "closed" else 1)
        trips.add_metric([provider, model], int(b.get("tripped", 0)))
    paused = GaugeMetricFamily("switchyard_provider_pause_seconds",
                               "Seconds left of a pause the provider announced",
                               labels=["provider"])
    for provider, seconds in s.pauses.items():
        paused.add_metric([provider], seconds)
    by_provider = CounterMetricFamily("switchyard_provider_spend_usd", "USD spent, by provider",
                                      labels=["provider"])
    for provider in sorted({*config.providers, *(k[9:] for k in s.spent
                                                  if k.startswith("provider:"))}):
        by_provider.add_metric([provider], s.spent.get(f"provider:{provider}", 0.0))
    by_tenant = CounterMetricFamily("switchyard_tenant_spend_usd", "USD spent, by tenant",
                                    labels=["tenant"])
    for tenant, usd in fold_tenants({k[7:]: v for k, v in s.spent.items()
                                     if k.startswith("tenant:")}, config).items():
        by_tenant.add_metric([tenant], usd)
    yield from (opened, trips, paused, by_provider, by_tenant)


def fold_tenants(values: dict[str, float], config: SwitchyardConfig) -> dict[str, float]:
    """At most ``[monitoring] max_tenants`` names: configured tenants first, then the
    largest values; the rest summed as ``other``."""
    values = {**{t: 0.0 for t in config.tenants}, **values}  # configured ones always shown
    ranked = sorted(values, key=lambda t: (t not in config.tenants, -values[t], t))
    kept = ranked[:config.monitoring.max_tenants]
    out = {t: values[t] for t in kept}
    rest = [values[t] for t in ranked[len(kept):]]
    if rest:
        out["other"] = out.get("other", 0.0) + sum(rest)
    return out


def _redis_families(s: Snapshot) -> Iterator[Metric]:
    fields = (("switchyard_redis_memory_used_bytes", "used_memory", "Memory Redis uses"),
              ("switchyard_redis_maxmemory_bytes", "maxmemory", "Its maxmemory (0: none)"),
              ("switchyard_redis_connected_clients", "connected_clients", "Client connections"))
    for name, field, doc in fields:
        family = GaugeMetricFamily(name, doc, labels=["node"])
        for node, info in s.nodes.items():
            family.add_metric([node], float(info.get(field, 0)))
        yield family
    evicted = CounterMetricFamily("switchyard_redis_evicted_keys", "Keys evicted",
                                  labels=["node"])
    for node, info in s.nodes.items():
        evicted.add_metric([node], float(info.get("evicted_keys", 0)))
    yield evicted


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("exporter", help="serve the platform's metrics (queues, admission, "
                       "providers, spend, Redis) for Prometheus")
    p.add_argument("--port", type=int, default=9200)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--config")
    p.add_argument("--redis-url")
    logs.add_argument(p)
    p.set_defaults(handler=serve)


def serve(ns: argparse.Namespace) -> int:
    logs.configure(ns.log_format)
    config = load_config(ns.config)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(config, resolve_redis_url(config, ns.redis_url)))
    server, thread = start_http_server(ns.port, ns.host, registry=registry)
    log.info("exporter serving /metrics on %s:%d", ns.host, ns.port)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(5)
    return 0
