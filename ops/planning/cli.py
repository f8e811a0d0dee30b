"""`switchyard plan WORKLOAD | --from-redis` and `switchyard profile --pool P`."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import SwitchyardError
from switchyard.broker.keys import Keys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.schemas import PRIORITIES, Priority, now_ms
from switchyard.broker.settings import RedisSettings
from switchyard.broker.stats import StreamCounters, read_counters
from switchyard.ops.planning.errors import PlanningError, ProfileError
from switchyard.ops.planning.planner import PoolPlan, plan_pool
from switchyard.ops.planning.profile import Profile, load_profile, nominal_profile
from switchyard.ops.planning.report import plot, render, snippet
from switchyard.ops.planning.workload import (
    Workload,
    dump_workload,
    load_workload,
    workload_from_counters,
)
from switchyard.ops.status import spend

__all__ = ["add_profile_parser", "run_plan"]


def _profiles(config: SwitchyardConfig, paths: list[str]) -> dict[str, Profile]:
    out = {}
    for path in paths:
        profile = load_profile(path)
        if profile.pool not in config.pools:
            raise ProfileError(f"profile {path}: pool {profile.pool!r} is not in the config")
        out[profile.pool] = profile
    return out


def plan_workload(config: SwitchyardConfig, workload: Workload, profiles: dict[str, Profile],
                  folder: Path) -> list[PoolPlan]:
    plans = []
    for name in dict.fromkeys(config.models[t.model].pool for t in workload.traffic):
        if config.pools[name].engine == "bridge":
            raise PlanningError(
                f"pool {name!r} is a provider bridge: it has no workers to plan. Route the "
                "model to a GPU pool with this pool as its overflow to compare the two")
        traffic = [t for t in workload.traffic if config.models[t.model].pool == name]
        profile = profiles.get(name) or nominal_profile(name, config.pools[name])
        overflow = next((config.models[t.model].overflow for t in traffic
                         if config.models[t.model].overflow), None)
        plans.append(plan_pool(config, workload, name, traffic, profile,
                               overflow_profile=profiles.get(overflow or ""), folder=folder))
    return plans


async def _from_redis(config: SwitchyardConfig, url: str, with_spend: bool
                      ) -> tuple[Workload | None, dict[str, float] | None]:
    redis = RedisSettings.from_url(url).connect()
    keys = Keys(config.redis.prefix)
    streams = [(name, p, keys.partition(name, n).drain(p))
               for name, pool in config.pools.items() for p in PRIORITIES
               for n in range(pool.partitions)]
    try:
        read = await read_counters(redis, [drain for _, _, drain in streams], now_ms())
        counters: dict[tuple[str, Priority], list[StreamCounters]] = {}
        for (name, p, _), counted in zip(streams, read, strict=True):
            counters.setdefault((name, p), []).append(counted)
        spent = await spend(redis, config) if with_spend else None
        return workload_from_counters(config, counters), spent
    finally:
        await redis.aclose()


def run_plan(ns: argparse.Namespace) -> int:
    try:
        return _run_plan(ns)
    except SwitchyardError as exc:
        print(f"switchyard plan: {exc}")
        return 2


def _run_plan(ns: argparse.Namespace) -> int:
    config = load_config(ns.config)
    spent = None
    if ns.from_redis or ns.spend:
        url = resolve_redis_url(config, ns.redis_url)
        measured, spent = asyncio.run(_from_redis(config, url, ns.spend or ns.from_redis))
    if ns.from_redis:
        workload, folder, source = measured, Path(), "--from-redis"
        if ns.write_workload and workload is not None:
            Path(ns.write_workload).write_text(dump_workload(workload))
    else:
        workload = load_workload(ns.workload, config)
        folder, source = Path(ns.workload).parent, ns.workload
    assert workload is not None
    if ns.seconds:
        workload = workload.model_copy(update={"seconds": ns.seconds})
    plans = plan_workload(config, workload, _profiles(config, ns.profile), folder)
    out = Path(ns.out)
    Path(f"{out}.toml").write_text(snippet(plans, source))
    drawn = plot(workload, plans, Path(f"{out}.png"))
    if ns.as_json:
        print(json.dumps({"plans": [{**asdict(p), "profile": p.profile.model_dump()}
                                    for p in plans], "spend": spent}, indent=2))
        return 0
    print(render(workload, plans, spent))
    print(f"config snippet: {out}.toml; plot: {drawn}")
    return 0


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", nargs="?", help="a workload file (TOML; see examples/)")
    p.add_argument("--from-redis", action="store_true",
                   help="plan the load the platform counted over the last hour")
    p.add_argument("--write-workload", help="with --from-redis: also write it (TOML) here")
    p.add_argument("--profile", action="append", default=[],
                   help="a profile from `switchyard profile` (repeat, one per pool)")
    p.add_argument("--out", default="plan", help="writes OUT.toml (config) and OUT.png")
    p.add_argument("--seconds", type=float, default=None,
                   help="simulate this long per candidate (default: the workload's)")
    p.add_argument("--spend", action="store_true",
                   help="show what was spent so far (reads Redis)")


def add_profile_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("profile", help="measure a pool's service curve through the real "
                       "queue (starts its own workers; a private Redis unless --redis-url)")
    p.add_argument("--pool", required=True)
    p.add_argument("--out", default=None, help="the profile's path (default POOL.json)")
    p.add_argument("--lengths", default="16", help="input lengths (words), comma separated")
    p.add_argument("--output-tokens", type=int, default=32, help="generate pools")
    p.add_argument("--jobs", type=int, default=200, help="jobs per point, at least")
    p.add_argument("--config")
    p.add_argument("--redis-url")
    p.set_defaults(handler=_profile)


def _profile(ns: argparse.Namespace) -> int:
    from switchyard.ops.planning.profiling import measure

    if ns.config is None:
        print("switchyard profile: --config is needed (the workers it starts read it)")
        return 2
    config = load_config(ns.config)
    if ns.pool not in config.pools:
        print(f"switchyard profile: no pool {ns.pool!r} in the config")
        return 2
    profile = measure(Path(ns.config), config, ns.pool, redis_url=ns.redis_url,
                      lengths=tuple(int(x) for x in ns.lengths.split(",")),
                      output_tokens=ns.output_tokens, jobs=ns.jobs)
    out = Path(ns.out or f"{ns.pool}.json")
    profile.dump(out)
    for point in profile.points:
        print(f"batch {point.batch:>4}  input {point.input_tokens:>5}  "
              f"{point.jobs_per_s:>9.1f} jobs/s  {point.batch_ms:>9.1f} ms a batch"
              + (f"  TTFT {point.ttft_ms:.1f} ms" if point.ttft_ms is not None else ""))
    for target in profile.targets:
        print(f"{target.provider}/{target.model}: p50 {target.latency_p50_ms:.0f} ms, "
              f"p99 {target.latency_p99_ms:.0f} ms, errors {target.error_rate:.1%}")
    print(f"profile: {out}")
    return 0
