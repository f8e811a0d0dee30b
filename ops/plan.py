"""How many workers a pool needs, live: the analytic first guess, Erlang C, fed from the
platform (the workload planner, `switchyard plan WORKLOAD`, is ``ops/planning/``).

Each worker is taken as one server of ``capacity`` jobs/s (what its heartbeat measured:
jobs over the time from taking each batch up to its finish, over its last 256 batches);
the pool's offered load is jobs/s offered to it (every verdict but duplicates). The
advice is the fewest workers for which an M/M/c queue keeps ``[monitoring] wait_slo`` of
jobs within the pool's interactive wait target (``wait_targets.interactive``, else
``wait_objective_s``).

`switchyard plan --live [--window 5]` reads the counters twice, ``window`` seconds apart,
and prints the advice per pool; the exporter serves the same advice from the last full
minute's arrivals as ``switchyard_recommended_workers{pool}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.keys import Keys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.schemas import PRIORITIES, now_ms
from switchyard.broker.settings import RedisSettings
from switchyard.broker.stats import StreamCounters, read_counters
from switchyard.ops.status import PoolStatus, collect

__all__ = ["Advice", "add_parser", "advise", "erlang_c", "offered", "per_worker",
           "workers_for"]

MAX_WORKERS = 10_000


def erlang_c(servers: int, load: float) -> float:
    """The probability that an arrival waits in an M/M/c queue of ``servers`` servers
    offered ``load`` Erlangs (arrival rate / service rate); 1 when ``load >= servers``."""
    if load <= 0:
        return 0.0
    if load >= servers:
        return 1.0
    blocked = 1.0  # Erlang B, by its recurrence (stable for any number of servers)
    for k in range(1, servers + 1):
        blocked = load * blocked / (k + load * blocked)
    return servers * blocked / (servers - load * (1 - blocked))


def workers_for(rate: float, capacity: float, target_s: float, slo: float) -> int:
    """The fewest workers of ``capacity`` jobs/s each for which a share ``slo`` of jobs
    arriving at ``rate`` jobs/s waits at most ``target_s`` (0 for no traffic)."""
    if rate <= 0:
        return 0
    load = rate / capacity
    for servers in range(max(1, math.floor(load)), MAX_WORKERS + 1):
        if servers <= load:
            continue
        late = erlang_c(servers, load) * math.exp(-(servers * capacity - rate) * target_s)
        if late <= 1 - slo:
            return servers
    return MAX_WORKERS


def offered(counters: list[StreamCounters]) -> int:
    """Jobs offered so far to these streams (every verdict but duplicates)."""
    return sum(n for c in counters for (verdict, _), n in c.verdicts.items()
               if verdict not in ("duplicate", "reserved"))


def per_worker(pool: PoolStatus) -> float | None:
    """The median capacity (jobs/s) the pool's live workers measured (None: not yet)."""
    values = [float(w["capacity"]) for w in pool.workers if w.get("capacity")]
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Advice:
    pool: str
    offered_per_s: float
    workers: int
    capacity_per_worker: float | None
    target_s: float
    recommended: int
    """Workers to run; where no worker has measured its capacity yet, the live count."""


def advice(config: SwitchyardConfig, pool: PoolStatus, rate: float) -> Advice:
    settings = config.pools[pool.pool]
    target = config.monitoring.objective(settings.wait_targets.interactive)
    capacity = per_worker(pool)
    queued = sum(s.depth for s in pool.streams)
    recommended = len(pool.workers) if capacity is None else max(
        1 if queued else 0, workers_for(rate, capacity, target, config.monitoring.wait_slo))
    return Advice(pool.pool, round(rate, 2), len(pool.workers), capacity, target, recommended)


async def advise(redis: aioredis.Redis, config: SwitchyardConfig, window_s: float
                 ) -> list[Advice]:
    """Each pool's advice, from the jobs offered over the next ``window_s`` seconds."""
    keys = Keys(config.redis.prefix)
    drains = {name: [keys.partition(name, n).drain(p) for n in range(pool.partitions)
                     for p in PRIORITIES] for name, pool in config.pools.items()}

    async def count() -> tuple[float, dict[str, int]]:
        at = time.monotonic()
        return at, {name: offered(await read_counters(redis, d, now_ms()))
                    for name, d in drains.items()}
    start, before = await count()
    await asyncio.sleep(window_s)
    end, after = await count()
    pools = {p.pool: p for p in await collect(redis, config)}
    return [advice(config, pools[name], (after[name] - before[name]) / (end - start))
            for name in config.pools]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from switchyard.ops.planning import cli as planning

    p = sub.add_parser("plan", help="how many workers each pool needs and what it costs: "
                       "for a workload file, the load counted lately, or live")
    planning.add_plan_arguments(p)
    p.add_argument("--live", action="store_true",
                   help="instead: recommended workers now, from the load offered now")
    p.add_argument("--window", type=float, default=5.0, help="--live: seconds to measure")
    p.add_argument("--json", action="store_true", dest="as_json")
    p.add_argument("--config")
    p.add_argument("--redis-url")
    p.set_defaults(handler=_handle)
    planning.add_profile_parser(sub)


def _handle(ns: argparse.Namespace) -> int:
    from switchyard.ops.planning.cli import run_plan

    if ns.live:
        return asyncio.run(_live(ns))
    if not ns.workload and not ns.from_redis:
        print("switchyard plan: give a workload file, --from-redis or --live")
        return 2
    return run_plan(ns)


async def _live(ns: argparse.Namespace) -> int:
    config = load_config(ns.config)
    redis = RedisSettings.from_url(resolve_redis_url(config, ns.redis_url)).connect()
    try:
        advices = await advise(redis, config, ns.window)
    finally:
        await redis.aclose()
    if ns.as_json:
        print(json.dumps([asdict(a) for a in advices], indent=2))
        return 0
    print(f"{'pool':<14}{'offered/s':>10}{'workers':>9}{'per worker/s':>14}{'target':>8}"
          f"{'recommended':>13}")
    for a in advices:
        per = "-" if a.capacity_per_worker is None else f"{a.capacity_per_worker:.1f}"
        print(f"{a.pool:<14}{a.offered_per_s:>10.1f}{a.workers:>9}{per:>14}"
              f"{a.target_s:>7.2f}s{a.recommended:>13}")
    return 0
