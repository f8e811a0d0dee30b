"""`switchyard bench plan`: the planner's simulator against the real platform.

Echo workers with a fixed service curve (``delay_ms`` a batch plus ``job_delay_ms`` a
job) are profiled through the real queue (``switchyard profile``'s measurement), and
their capacity taken from that profile. Then, for each workload shape (steady Poisson;
bursty: 3x the base rate for 20 s of every minute, at the same mean) and each load (a
multiple of capacity, the mean rate), the real platform runs ``runs`` times (a mix of
the three priorities, with their deadlines and wait targets, admission control on) and
the simulator runs the same workload description (its own random arrivals, over
``sim_seeds`` seeds). Compared per priority: p99 queue wait; overall: goodput (share of
offered jobs finished within their deadline) and the share refused.

The target: the simulator's median within max(20 %, the real runs' own spread: the
largest distance of a run from their median) of the real median; within 50 ms where
the waits are under 250 ms, and 2 points for shares.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
import tomllib
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import PRIORITIES
from switchyard.dispatcher.client import AsyncClient
from switchyard.ops.bench.common import bench_env
from switchyard.ops.bench.load import Sample, replay, summarize
from switchyard.ops.planning.models import offers_for, pool_model
from switchyard.ops.planning.profile import Profile, nominal_profile
from switchyard.ops.planning.profiling import measure
from switchyard.ops.planning.simulator import SimResult, simulate
from switchyard.ops.planning.workload import Burst, Traffic
from switchyard.ops.processes import WorkerProcess

__all__ = ["PlanBenchOptions", "PlanBenchReport", "check", "render", "run_plan_bench", "speed"]

MIX = {"interactive": 0.3, "standard": 0.3, "batch": 0.4}
DEADLINES = {"interactive": 2.0, "standard": 5.0, "batch": 10.0}
TARGETS = {"interactive": 0.5, "standard": 2.0, "batch": 5.0}
BURST = Burst(factor=3.0, seconds=20.0, every=60.0)
IDLE_S = 6.0
"""Between runs: past the drain windows' 5 s idle, so each run starts as the simulator's."""


@dataclass(frozen=True)
class PlanBenchOptions:
    workers: int = 2
    batch: int = 8
    delay_ms: float = 100.0
    job_delay_ms: float = 10.0
    loads: tuple[float, ...] = (0.5, 0.9, 1.5)
    shapes: tuple[str, ...] = ("steady", "bursty")
    runs: int = 3
    steady_s: float = 30.0
    bursty_s: float = 60.0
    sim_seeds: int = 30
    seed: int = 11


@dataclass(frozen=True)
class Compared:
    shape: str
    load: float
    metric: str
    """'wait p99 <priority>' (ms), 'goodput' or 'refused' (shares)."""
    real: list[float]
    predicted: float
    tolerance: float
    """Absolute: how far the prediction may be from the real median."""

    @property
    def median(self) -> float:
        return statistics.median(self.real)

    @property
    def ok(self) -> bool:
        return abs(self.predicted - self.median) <= self.tolerance


@dataclass(frozen=True)
class PlanBenchReport:
    profile: Profile
    capacity_per_s: float
    rows: list[Compared]
    sim_speed: float
    """Simulated seconds per wall second, over every simulation run here."""


def _config(options: PlanBenchOptions) -> str:
    return "\n".join([
        '[redis]\nprefix = "syplan"', "[jobs.deadline_s]",
        *(f"{p} = {d}" for p, d in DEADLINES.items()),
        "[pools.plan]", 'engine = "echo"', f"max_batch = {options.batch}",
        f"delay_ms = {options.delay_ms}", f"job_delay_ms = {options.job_delay_ms}",
        "pack_window = 1", "lower_share = 0.2",
        "[pools.plan.wait_targets]", *(f"{p} = {t}" for p, t in TARGETS.items()),
        '[models.echo]\npool = "plan"'])


def traffic(shape: str, rate: float) -> list[Traffic]:
    """The workload at a mean of ``rate`` jobs/s."""
    burst = BURST if shape == "bursty" else None
    base = rate * BURST.every / (BURST.every + (BURST.factor - 1) * BURST.seconds) \
        if burst else rate
    return [Traffic(model="echo", priority=p, rate=base * share, burst=burst,  # type: ignore[arg-type]
                    deadline_s=DEADLINES[p]) for p, share in MIX.items()]


def _figures(samples: Sequence[Sample], start_ms: int, seconds: float) -> dict[str, float]:
    """Waits and refusals as the overload bench takes them (``load.summarize``); goodput
    over every job offered, whenever it finished."""
    out = {f"wait p99 {p}": summarize([s for s in samples if s.priority == p], start_ms,
                                      seconds, 0.0).wait_p99_ms for p in PRIORITIES}
    whole = summarize(samples, start_ms, seconds, 0.0)
    out["goodput"] = sum(s.state == "succeeded" and s.finished_ms <= s.deadline_ms
                         for s in samples) / max(1, whole.offered)
    out["refused"] = whole.rejected / max(1, whole.offered)
    return out


def _sim_figures(r: SimResult) -> dict[str, float]:
    out = {f"wait p99 {p}": x.wait_ms(99) for p, x in r.priorities.items()}
    out["goodput"] = r.share("good")
    out["refused"] = r.share("rejected")
    return out


async def _real(config: SwitchyardConfig, url: str, shape: str, rate: float, seconds: float,
                seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    arrivals = sorted((at, "", t.priority) for t in traffic(shape, rate)
                      for at, _, _ in t.arrivals(seconds, rng, folder=Path()))
    async with AsyncClient(config, redis_url=url) as client:
        samples, start_ms = await replay(client, arrivals, DEADLINES)
    return _figures(samples, start_ms, seconds)


def _tolerance(metric: str, real: list[float]) -> float:
    median = statistics.median(real)
    spread = max(abs(x - median) for x in real)
    if metric.startswith("wait"):
        return max(0.2 * median, spread, 50.0 if median < 250 else 0.0)
    return max(0.02, spread)


def run_plan_bench(options: PlanBenchOptions) -> PlanBenchReport:
    rows: list[Compared] = []
    simulated = wall = 0.0
    with bench_env(_config(options)) as env, ExitStack() as stack:
        profile = measure(env.config_path, env.config, "plan", redis_url=env.redis_url,
                          jobs=100)
        pool = env.config.pools["plan"]
        capacity = options.workers * profile.jobs_per_s(pool.max_batch)
        for _ in range(options.workers):
            stack.enter_context(WorkerProcess("plan", env.redis_url, env.config_path,
                                              env.config))
        model = pool_model(env.config, "plan", profile, options.workers)
        for shape in options.shapes:
            seconds = options.steady_s if shape == "steady" else options.bursty_s
            for load in options.loads:
                real = []
                for run in range(options.runs):
                    time.sleep(IDLE_S)
                    real.append(asyncio.run(_real(env.config, env.redis_url, shape,
                                                  load * capacity, seconds,
                                                  options.seed + run)))
                sims = [simulate(model, offers_for(traffic(shape, load * capacity),
                                                   env.config, seconds, 1000 + s), seconds)
                        for s in range(options.sim_seeds)]
                simulated += seconds * len(sims)
                wall += sum(s.wall_s for s in sims)
                predicted = [_sim_figures(s) for s in sims]
                for metric in real[0]:
                    values = [r[metric] for r in real]
                    rows.append(Compared(shape, load, metric, values,
                                         statistics.median(p[metric] for p in predicted),
                                         _tolerance(metric, values)))
    return PlanBenchReport(profile, round(capacity, 2), rows, round(simulated / wall, 1))


def speed(rate: float = 200.0, seconds: float = 3_600.0, seed: int = 1) -> str:
    """The simulator alone: ``rate`` jobs/s of the bench's mix for ``seconds`` simulated,
    on the bench's pool (its nominal curve) with workers enough for 0.8x load."""
    options = PlanBenchOptions()
    config = SwitchyardConfig.model_validate(tomllib.loads(_config(options)))
    pool = config.pools["plan"]
    profile = nominal_profile("plan", pool)
    workers = math.ceil(rate / 0.8 / profile.jobs_per_s(pool.max_batch))
    offers = offers_for(traffic("steady", rate), config, seconds, seed)
    result = simulate(pool_model(config, "plan", profile, workers), offers, seconds)
    return (f"simulator: {len(offers):,} jobs ({rate:.0f}/s for {seconds:.0f} s simulated, "
            f"{workers} workers) in {result.wall_s:.2f} s: {seconds / result.wall_s:.0f}x "
            "real time")


def render(report: PlanBenchReport) -> str:
    out = [f"capacity: {report.capacity_per_s} jobs/s (profiled: "
           + ", ".join(f"b={p.batch} {p.batch_ms:.1f} ms" for p in report.profile.points)
           + f"); simulator {report.sim_speed:.0f}x real time",
           f"{'shape':<8}{'load':>5}  {'metric':<22}{'real runs':>26}{'median':>9}"
           f"{'predicted':>10}{'allowed':>9}  ok"]
    for r in report.rows:
        spec = ".0f" if r.metric.startswith("wait") else ".1%"

        def fmt(v: float, spec: str = spec) -> str:
            return format(v, spec)
        out.append(f"{r.shape:<8}{r.load:>5}  {r.metric:<22}"
                   f"{' '.join(fmt(v) for v in r.real):>26}{fmt(r.median):>9}"
                   f"{fmt(r.predicted):>10}{('±' + fmt(r.tolerance)):>9}  "
                   f"{'yes' if r.ok else 'NO'}")
    out.append(json.dumps({"capacity_per_s": report.capacity_per_s,
                           "sim_speed": report.sim_speed,
                           "rows": [asdict(r) for r in report.rows]}))
    return "\n".join(out)


def check(report: PlanBenchReport) -> list[str]:
    return [f"{r.shape} {r.load}x {r.metric}: predicted {r.predicted:.3f}, real median "
            f"{r.median:.3f} (allowed ±{r.tolerance:.3f})" for r in report.rows if not r.ok]
