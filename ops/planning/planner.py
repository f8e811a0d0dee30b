"""`switchyard plan WORKLOAD`: per pool, the fewest-dollar worker count that meets the SLOs.

For each pool the workload's traffic reaches (its models' routes), the search starts from
the analytic first guess (Erlang C over the workers' batch slots, :func:`seed`) and runs
the simulator at each worker count around it, spill to the routes' overflow (a provider)
allowed where there is one: the plan is the cheapest count whose every priority meets
its SLOs (p99 queue wait, p99 time to first token, goodput). Priced per hour: GPU
workers at ``[prices] gpu_per_hour`` (by pool, then device) or the pool's
``cost_per_hour``; spilled tokens at ``[prices.providers]`` or the overflow targets'
``price_in``/``price_out``. The alternatives: all on GPUs (the fewest workers meeting
the SLOs with spill off), all on providers (every job at the provider's price), and no
spill (the plan's worker count with spill off: what the SLOs would be).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from switchyard.broker.config import PoolConfig, SwitchyardConfig, WaitTargets
from switchyard.broker.schemas import PRIORITIES
from switchyard.ops.plan import workers_for
from switchyard.ops.planning.models import offers_for, pool_model
from switchyard.ops.planning.profile import Profile
from switchyard.ops.planning.simulator import Offer, SimResult, simulate
from switchyard.ops.planning.workload import ProviderPrice, Traffic, Workload

__all__ = ["Candidate", "PoolPlan", "plan_pool", "seed"]

MAX_TRIES = 40
"""Worker counts simulated per pool, at most."""
SCALES = (1.0, 0.7, 0.5)
"""The wait targets tried at each worker count, as shares of each priority's p99 wait SLO
(the first that meets the SLOs is kept): a target sizes the cap, and a job admitted near
it still waits for the batches ahead of it in the workers' buffers."""
LOADS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5)
"""Multiples of the workload's rate for the chosen size's wait-against-load curve."""


@dataclass(frozen=True)
class Candidate:
    workers: int
    spill: bool
    wait_p50_ms: dict[str, float]
    wait_p99_ms: dict[str, float]
    ttft_p99_ms: dict[str, float]
    goodput: dict[str, float]
    refused: float
    spilled: float
    gpu_usd_h: float
    provider_usd_h: float
    misses: list[str] = field(default_factory=list)
    scale: float = 1.0
    """The wait targets simulated, as a share of the SLOs (see ``SCALES``)."""

    @property
    def usd_h(self) -> float:
        return self.gpu_usd_h + self.provider_usd_h

    @property
    def meets(self) -> bool:
        return not self.misses


@dataclass(frozen=True)
class PoolPlan:
    pool: str
    profile: Profile
    offered_per_s: float
    tokens_per_s: float
    seed: int
    chosen: Candidate
    tried: list[Candidate]
    alternatives: dict[str, Candidate | None]
    load_curve: list[tuple[float, dict[str, float]]]
    wait_targets: dict[str, float]
    provider: str | None
    caps: dict[str, int]
    """Fixed caps, a backstop: a deadline's worth of the chosen workers' capacity (full
    batches at the mean input length), within the configured caps."""

    @property
    def usd_per_mtok(self) -> float:
        return self.chosen.usd_h / max(1e-9, self.tokens_per_s * 3600 / 1e6)


@dataclass(frozen=True)
class _Prices:
    gpu_h: float
    provider: str | None
    price: ProviderPrice | None
    provider_ms: float


def seed(rate: float, profile: Profile, pool: PoolConfig, target_s: float, slo: float,
         tokens: float) -> int:
    """The analytic first guess: Erlang C over batch slots (each worker ``max_batch``
    slots, each serving a job a full batch's time)."""
    slot_rate = 1000 / profile.batch_ms(pool.max_batch, tokens)
    return max(1, math.ceil(workers_for(rate, slot_rate, target_s, slo) / pool.max_batch))


def _prices(config: SwitchyardConfig, workload: Workload, name: str,
            overflow: str | None, overflow_profile: Profile | None) -> _Prices:
    pool = config.pools[name]
    table = workload.prices.gpu_per_hour
    gpu = table.get(name, table.get(pool.device, pool.cost_per_hour))
    if overflow is None:
        return _Prices(gpu, None, None, 0.0)
    target = config.pools[overflow].targets[0] if config.pools[overflow].targets else None
    provider = target.provider if target else overflow
    price = workload.prices.providers.get(provider) or (ProviderPrice(
        input_per_mtok=target.price_in, output_per_mtok=target.price_out) if target else None)
    latency = next((t.latency_p50_ms for t in (overflow_profile.targets if overflow_profile
                                                else []) if t.error_rate < 1), 500.0)
    return _Prices(gpu, provider, price, latency)


def _candidate(result: SimResult, workers: int, spill: bool, prices: _Prices,
               workload: Workload, ttft_ms: float, scale: float) -> Candidate:
    ran = {p: r for p, r in result.priorities.items() if r.offered}
    wait99 = {p: round(r.wait_ms(99), 1) for p, r in ran.items()}
    ttft99 = {p: round(w + ttft_ms, 1) for p, w in wait99.items()}
    goodput = {p: round(r.good / r.offered, 4) for p, r in ran.items()}
    misses = []
    for p, slo in workload.slo.items():
        if p not in ran:
            continue
        if slo.wait_p99_s is not None and wait99[p] > slo.wait_p99_s * 1000:
            misses.append(f"{p} p99 wait {wait99[p]:.0f} ms > {slo.wait_p99_s} s")
        if slo.ttft_p99_s is not None and ttft_ms and ttft99[p] > slo.ttft_p99_s * 1000:
            misses.append(f"{p} p99 TTFT {ttft99[p]:.0f} ms > {slo.ttft_p99_s} s")
        if goodput[p] < slo.goodput:
            misses.append(f"{p} goodput {goodput[p]:.2%} < {slo.goodput:.2%}")
    provider = (prices.price or ProviderPrice()).usd(
        result.spill_tokens_in, result.spill_tokens_out) / (result.seconds / 3600)
    return Candidate(
        workers, spill, {p: round(r.wait_ms(50), 1) for p, r in ran.items()}, wait99, ttft99,
        goodput, round(result.share("rejected"), 4), round(result.share("spilled"), 4),
        round(workers * prices.gpu_h, 4), round(provider, 4), misses, scale)


def _settings(pool: PoolConfig, workload: Workload, scale: float) -> PoolConfig:
    """The pool with the plan's wait targets: ``scale`` of each priority's p99 wait SLO
    (the configured target where the workload sets none)."""
    targets = {}
    for p in PRIORITIES:
        slo = workload.slo[p].wait_p99_s if p in workload.slo else None
        targets[p] = round(slo * scale, 3) if slo else getattr(pool.wait_targets, p)
    return pool.model_copy(update={"wait_targets": WaitTargets(**targets)})


def plan_pool(config: SwitchyardConfig, workload: Workload, name: str,
              traffic: Sequence[Traffic], profile: Profile, *,
              overflow_profile: Profile | None = None, folder: Path = Path(),
              seed_n: int = 1) -> PoolPlan:
    pools = {s: _settings(config.pools[name], workload, s) for s in SCALES}
    pool = pools[1.0]
    overflow = next((config.models[t.model].overflow for t in traffic
                     if config.models[t.model].overflow), None)
    prices = _prices(config, workload, name, overflow, overflow_profile)
    offers = offers_for(traffic, config, workload.seconds, seed_n, folder)
    rate = len(offers) / workload.seconds
    tokens = sum(o.input_tokens + o.output_tokens for o in offers) / workload.seconds
    mean_in = sum(o.input_tokens for o in offers) / max(1, len(offers))
    target = min((s.wait_p99_s for s in workload.slo.values() if s.wait_p99_s), default=1.0)
    slo = max((s.goodput for s in workload.slo.values()), default=0.99) or 0.99
    first = seed(rate, profile, pool, target, slo, mean_in)

    def run(workers: int, spill: bool, these: Sequence[Offer] = offers,
            scale: float | None = None) -> Candidate:
        tried: list[Candidate] = []
        for s in SCALES if scale is None else (scale,):
            model = pool_model(config, name, profile, workers, pool=pools[s],
                               overflow=spill and overflow is not None,
                               provider_ms=prices.provider_ms,
                               provider_rpm=prices.price.rpm if prices.price else 0.0)
            tried.append(_candidate(simulate(model, these, workload.seconds), workers, spill,
                                    prices, workload, model.ttft_ms, s))
            if tried[-1].meets:
                break
        return tried[-1] if tried[-1].meets else tried[0]

    tried = _search(run, first, spill=overflow is not None)
    chosen = min((c for c in tried if c.meets), key=lambda c: (c.usd_h, c.workers),
                 default=max(tried, key=lambda c: c.workers))
    gpus = tried if overflow is None else _search(run, first, spill=False)
    all_gpu = min((c for c in gpus if c.meets), key=lambda c: c.workers, default=None)
    alternatives = {
        "all on GPUs": all_gpu,
        "all on providers": _all_on_provider(offers, workload, prices) if overflow else None,
        "no spill": run(chosen.workers, False, scale=chosen.scale) if chosen.spill else None}
    curve = []
    for load in LOADS:
        scaled = [Offer(o.at / load, o.priority, o.input_tokens, o.output_tokens,
                        o.deadline_s, o.retries, o.retry_after_s)
                  for o in offers if o.at / load < workload.seconds]
        curve.append((load, run(chosen.workers, chosen.spill, scaled,
                                chosen.scale).wait_p99_ms))
    capacity = chosen.workers * profile.jobs_per_s(pool.max_batch, mean_in)
    deadlines: dict[str, float] = {}
    for t in traffic:
        d = t.deadline_s or getattr(config.jobs.deadline_s, t.priority)
        deadlines[t.priority] = max(deadlines.get(t.priority, 0.0), d)
    caps = {p: max(1, min(getattr(pool.caps, p), math.ceil(capacity * d)))
            for p, d in deadlines.items()}
    targets = pools[chosen.scale].wait_targets
    return PoolPlan(name, profile, round(rate, 2), round(tokens, 1), first, chosen, tried,
                    alternatives, curve,
                    {p: getattr(targets, p) for p in PRIORITIES if getattr(targets, p)},
                    prices.provider, caps)


def _search(run: Callable[[int, bool], Candidate], first: int, *, spill: bool
            ) -> list[Candidate]:
    """Candidates from the first guess: down while the SLOs hold, up until they do (and
    two more, for the plot), within ``MAX_TRIES`` simulations."""
    seen = {first: run(first, spill)}
    w = first - 1
    while seen[first].meets and w >= 1 and len(seen) < MAX_TRIES:
        seen[w] = run(w, spill)
        if not seen[w].meets:
            break
        w -= 1
    w, extra = first + 1, 2
    while len(seen) < MAX_TRIES and extra > 0:
        seen[w] = run(w, spill)
        if any(c.meets for c in seen.values()):
            extra -= 1
        w += 1
    return [seen[w] for w in sorted(seen)]


def _all_on_provider(offers: Sequence[Offer], workload: Workload, prices: _Prices
                     ) -> Candidate:
    price = prices.price or ProviderPrice()
    usd = price.usd(sum(o.input_tokens for o in offers),
                    sum(o.output_tokens for o in offers)) / (workload.seconds / 3600)
    rpm = len(offers) / workload.seconds * 60
    refused = max(0.0, 1 - price.rpm / rpm) if price.rpm and rpm else 0.0
    latency: dict[str, float] = dict.fromkeys({PRIORITIES[o.priority] for o in offers}, 0.0)
    return Candidate(
        0, True, latency, dict(latency), dict(latency),
        dict.fromkeys(latency, round(1 - refused, 4)), round(refused, 4),
        round(1 - refused, 4), 0.0, round(usd, 4),
        [f"{rpm:.0f} requests/min over the provider's {price.rpm:.0f} rpm"] if refused else [])
