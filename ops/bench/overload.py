"""`switchyard bench overload`: admission control under 0.5x to 5x capacity.

N echo workers with a fixed service time (``--service-ms`` per batch of ``--batch``) give
a known capacity, which is also measured first. An open-loop generator then offers
Poisson load at each multiple of it: tenant ``steady`` sends a fixed, modest rate of
interactive and standard jobs; tenant ``greedy`` sends the rest, all priorities. Each load
runs twice on the same server and workers: with admission control (sized caps, age gate,
tenant shares) and without (fixed caps too large to bind, no gate, no tenants).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import EmbedResult
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.ops.bench.common import bench_env
from switchyard.ops.bench.load import Flow, Stats, offer, summarize
from switchyard.ops.processes import WorkerProcess

__all__ = ["OverloadOptions", "OverloadReport", "render", "run_overload_bench"]

DEADLINES = {"interactive": 2.0, "standard": 5.0, "batch": 10.0}
TARGETS = {"interactive": 0.5, "standard": 2.0, "batch": 5.0}
STEADY = Flow("steady", (("interactive", 0.5), ("standard", 0.5)))
GREEDY = Flow("greedy", (("interactive", 0.2), ("standard", 0.3), ("batch", 0.5)))
STEADY_SHARE = 0.1
"""The steady tenant's rate, as a share of capacity, at every load."""


def _pool_toml(name: str, options: OverloadOptions, controlled: bool) -> str:
    lines = [f"[pools.{name}]", 'engine = "echo"', f"max_batch = {options.batch}",
             f"delay_ms = {options.service_ms}", "pack_window = 1",
             # this scenario's (issue 5) settings, where the defaults have changed since:
             "lower_share = 0.2", "deadline_share = 1.0",
             f"cap_floor = {2 * options.workers * options.batch}",
             f"admission_control = {str(controlled).lower()}",
             f"[pools.{name}.caps]", "interactive = 1000000", "standard = 1000000",
             "batch = 1000000"]
    if controlled:
        lines += [f"[pools.{name}.wait_targets]",
                  *(f"{p} = {t}" for p, t in TARGETS.items())]
    return "\n".join(lines)


def _config(options: OverloadOptions) -> str:
    """One Redis, two prefixes' worth of pools: `ac` with admission control, `open`
    without; the models `echo` route to each through its own config (see _mode_config)."""
    return "\n".join([
        '[redis]\nprefix = "syovl"',
        "[jobs.deadline_s]", *(f"{p} = {d}" for p, d in DEADLINES.items()),
        _pool_toml("ac", options, True), _pool_toml("open", options, False),
        '[models.ac]\npool = "ac"', '[models.open]\npool = "open"',
    ])


def _mode_config(base: SwitchyardConfig, controlled: bool) -> SwitchyardConfig:
    data = base.model_dump()
    data["models"] = {"echo": {"pool": "ac" if controlled else "open"}}
    if controlled:
        data["tenants"] = {"steady": {"weight": 1.0}, "greedy": {"weight": 1.0}}
    return SwitchyardConfig.model_validate(data)


@dataclass(frozen=True)
class OverloadOptions:
    workers: int = 2
    batch: int = 8
    service_ms: float = 100.0
    loads: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    seconds: float = 10.0
    plot: Path | None = Path("overload.png")
    seed: int = 7


@dataclass(frozen=True)
class Row:
    mode: str
    load: float
    group: str
    """A priority, a tenant, or 'all'."""
    stats: Stats


@dataclass(frozen=True)
class OverloadReport:
    nominal_per_s: float
    capacity_per_s: float
    rows: list[Row]
    plot: str | None


async def _capacity(config: SwitchyardConfig, url: str, nominal: float) -> float:
    """Jobs/s the workers complete with a standing queue (every batch full): a backlog of
    about five seconds' work, timed between its 10th and 90th percentile completions."""
    async with AsyncClient(config, redis_url=url) as client:
        jobs = await asyncio.gather(*(client.embed("echo", "x", priority="batch",
                                                   deadline_s=60)
                                      for _ in range(int(nominal * 5))))

        async def done(job: AsyncJob[EmbedResult]) -> float:
            await job.result(timeout=60)
            return time.perf_counter()

        times = sorted(await asyncio.gather(*(done(job) for job in jobs)))
        low, high = len(times) // 10, len(times) * 9 // 10
        return (high - low) / (times[high] - times[low])


async def _level(config: SwitchyardConfig, url: str, capacity: float, load: float,
                 options: OverloadOptions) -> list[Row]:
    steady = STEADY_SHARE * capacity
    flows = [(STEADY, steady), (GREEDY, max(0.0, load * capacity - steady))]
    async with AsyncClient(config, redis_url=url) as client:
        samples, start_ms = await offer(client, flows, DEADLINES, options.seconds,
                                        options.seed)
    mode = "admission control" if config.tenants else "no admission control"
    groups = {"all": samples,
              **{p: [s for s in samples if s.priority == p] for p in DEADLINES},
              **{t: [s for s in samples if s.tenant == t] for t in ("steady", "greedy")}}
    warmup = min(3.0, options.seconds / 3)
    return [Row(mode, load, g, summarize(s, start_ms, options.seconds, warmup))
            for g, s in groups.items()]


def run_overload_bench(options: OverloadOptions) -> OverloadReport:
    nominal = options.workers * options.batch * 1000 / options.service_ms
    with bench_env(_config(options)) as env, ExitStack() as stack:
        for pool in ("ac", "open"):
            for _ in range(options.workers):
                stack.enter_context(WorkerProcess(pool, env.redis_url, env.config_path,
                                                  env.config))
        rows: list[Row] = []
        capacity = asyncio.run(_capacity(_mode_config(env.config, False), env.redis_url,
                                         nominal))
        for load in options.loads:
            for controlled in (True, False):
                rows += asyncio.run(_level(_mode_config(env.config, controlled),
                                           env.redis_url, capacity, load, options))
    plot = None
    if options.plot is not None:
        from switchyard.ops.bench.plot import plot_overload

        plot = str(plot_overload(rows, capacity, TARGETS["interactive"], options.plot))
    return OverloadReport(round(nominal, 1), round(capacity, 1), rows, plot)


def render(report: OverloadReport) -> str:
    out = [f"capacity: {report.capacity_per_s:.1f} jobs/s measured "
           f"({report.nominal_per_s:.0f} nominal); goodput = succeeded within deadline",
           f"{'mode':<21}{'load':>5} {'group':<12}{'offered':>8}{'goodput/s':>10}"
           f"{'%cap':>6}{'wait p50':>9}{'p99 ms':>8}{'rej%':>6}{'rej p99':>8}"
           f"{'expired':>8}{'late':>5}{'failed':>7}  rejected by reason"]
    for row in report.rows:
        s = row.stats
        out.append(
            f"{row.mode:<21}{row.load:>5} {row.group:<12}{s.offered:>8}{s.goodput_per_s:>10.1f}"
            f"{s.goodput_per_s / report.capacity_per_s:>6.0%}{s.wait_p50_ms:>9.0f}"
            f"{s.wait_p99_ms:>8.0f}{s.rejected / max(1, s.offered):>6.0%}"
            f"{s.reject_p99_ms:>8.2f}{s.expired:>8}{s.late_runs:>5}{s.failed:>7}  "
            + " ".join(f"{k}:{v}" for k, v in sorted(s.reasons.items())))
    if report.plot:
        out.append(f"plot: {report.plot}")
    out.append(json.dumps({"capacity_per_s": report.capacity_per_s,
                           "rows": [asdict(r) for r in report.rows]}))
    return "\n".join(out)


def check(report: OverloadReport) -> Sequence[str]:
    """The targets this bench exists for, as failures (empty: all met)."""
    failures = []
    for row in report.rows:
        s, where = row.stats, f"{row.load}x {row.group}"
        if row.mode != "admission control" or row.load < 2:
            continue
        if row.group == "all":
            if s.goodput_per_s < 0.9 * report.capacity_per_s:
                failures.append(f"{where}: goodput {s.goodput_per_s}/s < 90% of capacity")
            if s.reject_p99_ms > 5:
                failures.append(f"{where}: rejections answered in p99 {s.reject_p99_ms} ms")
            if s.late_runs:
                failures.append(f"{where}: {s.late_runs} jobs ran past their deadline")
        if row.group == "interactive" and s.wait_p99_ms > TARGETS["interactive"] * 1000:
            failures.append(f"{where}: p99 wait {s.wait_p99_ms} ms past its target")
        if row.group == "steady" and (s.rejected or s.expired or s.failed):
            failures.append(f"{where}: the steady tenant lost {s.rejected} rejected "
                            f"({s.reasons}), {s.expired} expired, {s.failed} failed")
    return failures
