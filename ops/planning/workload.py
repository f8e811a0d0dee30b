"""A workload: the traffic a plan is for, its SLOs and its prices (a TOML file).

    name = "example"
    seconds = 600                      # simulated per candidate (default 600)

    [[traffic]]                        # one per model and priority
    model = "minilm"
    priority = "interactive"
    rate = 40.0                        # Poisson, jobs/s; or:
    # daily = [5.0, 4.0, ...]          # 24 rates, one per hour (the plan sizes the peak)
    # trace = "arrivals.jsonl"         # {"t": s, "input_tokens": n, "output_tokens": n}
    burst = {factor = 3.0, seconds = 20.0, every = 60.0}   # optional
    input_tokens = {mean = 64, sd = 32}                    # lognormal; sd = 0: fixed
    output_tokens = {mean = 0}
    deadline_s = 2.0                   # default: the config's deadline for the priority
    retries = 0                        # client retries of a refused call ...
    retry_after_s = 1.0                # ... this long after the refusal

    [slo.interactive]                  # per priority; absent: no objective
    wait_p99_s = 0.5
    ttft_p99_s = 1.0                   # generate pools: wait + time to first token
    goodput = 0.99                     # share of offered jobs done within deadline

    [prices]
    gpu_per_hour = {minilm = 2.5}      # by pool name or device; else cost_per_hour
    [prices.providers.openai]          # else the overflow pool's target prices
    input_per_mtok = 0.02
    output_per_mtok = 0.0
    rpm = 10000                        # requests a minute the account allows (0: no limit)

`workload_from_redis` builds one from what the platform counted over the last hour.
"""

from __future__ import annotations

import json
import math
import random
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, model_validator

from switchyard.broker.confbase import Seconds, Strict
from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import Priority
from switchyard.broker.stats import StreamCounters
from switchyard.ops.planning.errors import WorkloadError

__all__ = ["Arrival", "Burst", "Lengths", "Prices", "ProviderPrice", "Slo", "Traffic",
           "Workload", "dump_workload", "load_workload", "workload_from_counters"]

Arrival = tuple[float, int, int]
"""(seconds from the start, input tokens, output tokens)."""


class Lengths(Strict):
    mean: Annotated[float, Field(ge=0)] = 1.0
    sd: Annotated[float, Field(ge=0)] = 0.0

    def draw(self, rng: random.Random) -> int:
        if self.sd == 0 or self.mean == 0:
            return round(self.mean)
        sigma2 = math.log(1 + (self.sd / self.mean) ** 2)
        return max(1, round(rng.lognormvariate(math.log(self.mean) - sigma2 / 2,
                                               math.sqrt(sigma2))))


class Burst(Strict):
    """``factor`` times the rate for ``seconds`` at the end of every ``every`` seconds."""

    factor: Annotated[float, Field(ge=0)] = 3.0
    seconds: Seconds = 20.0
    every: Seconds = 60.0

    @model_validator(mode="after")
    def _fits(self) -> Burst:
        if self.seconds > self.every:
            raise ValueError("a burst cannot last longer than its period ('every')")
        return self


class Traffic(Strict):
    model: str
    priority: Priority = "standard"
    rate: Annotated[float, Field(ge=0)] | None = None
    daily: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=24,
                                                                max_length=24)] | None = None
    trace: str | None = None
    burst: Burst | None = None
    input_tokens: Lengths = Lengths()
    output_tokens: Lengths = Lengths(mean=0.0)
    deadline_s: Seconds | None = None
    retries: Annotated[int, Field(ge=0, le=10)] = 0
    retry_after_s: Seconds = 1.0

    @model_validator(mode="after")
    def _one_process(self) -> Traffic:
        given = [n for n in ("rate", "daily", "trace") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of rate, daily or trace")
        return self

    def peak_rate(self) -> float:
        """Mean jobs/s in the busiest hour (a trace: over its length)."""
        base = self.rate if self.rate is not None else max(self.daily or [0.0])
        if self.burst is not None:
            b = self.burst
            base *= (b.every - b.seconds + b.factor * b.seconds) / b.every
        return base

    def segments(self, seconds: float) -> Iterator[tuple[float, float, float]]:
        """(start, end, jobs/s) pieces of constant rate over ``seconds`` (the peak hour)."""
        base = self.rate if self.rate is not None else max(self.daily or [0.0])
        if self.burst is None:
            yield 0.0, seconds, base
            return
        b, start = self.burst, 0.0
        while start < seconds:
            quiet = min(seconds, start + b.every - b.seconds)
            yield start, quiet, base
            yield quiet, min(seconds, start + b.every), base * b.factor
            start += b.every

    def arrivals(self, seconds: float, rng: random.Random, folder: Path) -> list[Arrival]:
        if self.trace is not None:
            return _trace(folder / self.trace, seconds)
        out: list[Arrival] = []
        for start, end, rate in self.segments(seconds):
            if rate <= 0:
                continue
            at = start + rng.expovariate(rate)
            while at < end:
                out.append((at, self.input_tokens.draw(rng), self.output_tokens.draw(rng)))
                at += rng.expovariate(rate)
        return out


def _trace(path: Path, seconds: float) -> list[Arrival]:
    out: list[Arrival] = []
    where = "opening it"
    try:
        with path.open() as f:
            for n, line in enumerate(f, 1):
                where = f"line {n}"
                if not line.strip():
                    continue
                row = json.loads(line)
                at = float(row["t"])
                if at < seconds:
                    out.append((at, int(row.get("input_tokens", 1)),
                                int(row.get("output_tokens", 0))))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WorkloadError(f"trace {path}: {where}: {exc!r}") from None
    return sorted(out)


class Slo(Strict):
    wait_p99_s: Seconds | None = None
    ttft_p99_s: Seconds | None = None
    goodput: Annotated[float, Field(ge=0, le=1)] = 0.0


class ProviderPrice(Strict):
    input_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    output_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    rpm: Annotated[float, Field(ge=0)] = 0.0

    def usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6


class Prices(Strict):
    gpu_per_hour: dict[str, Annotated[float, Field(ge=0)]] = {}
    providers: dict[str, ProviderPrice] = {}


class Workload(Strict):
    name: str = "workload"
    seconds: Annotated[float, Field(ge=10, le=86_400)] = 600.0
    traffic: Annotated[list[Traffic], Field(min_length=1)]
    slo: dict[Priority, Slo] = {}
    prices: Prices = Prices()


def load_workload(path: str | Path, config: SwitchyardConfig) -> Workload:
    """Read and check a workload file against the config (every model routed)."""
    try:
        workload = Workload.model_validate(tomllib.loads(Path(path).read_text()))
    except OSError as exc:
        raise WorkloadError(f"workload {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise WorkloadError(f"workload {path}: {exc}") from None
    unknown = sorted({t.model for t in workload.traffic} - set(config.models))
    if unknown:
        raise WorkloadError(f"workload {path}: models not in the config: {', '.join(unknown)}")
    return workload


def workload_from_counters(config: SwitchyardConfig,
                           counters: dict[tuple[str, Priority], list[StreamCounters]]
                           ) -> Workload:
    """A workload of what each pool's streams were offered over the last hour (the ring
    of arrivals per minute), as Poisson traffic of the pool's first model; each priority's
    SLO is the strictest of the pools' wait targets for it (else ``[monitoring]
    wait_objective_s``), met by ``wait_slo`` of jobs."""
    traffic = []
    for (pool, priority), streams in counters.items():
        minutes = [m for c in streams for m in c.minutes]
        spans = {m.minute for m in minutes}
        jobs, tokens = sum(m.jobs for m in minutes), sum(m.tokens for m in minutes)
        model = next((m for m, r in config.models.items() if r.pool == pool), None)
        if not jobs or model is None:
            continue
        traffic.append(Traffic(model=model, priority=priority,
                               rate=round(jobs / (60 * len(spans)), 3),
                               input_tokens=Lengths(mean=round(tokens / jobs, 1))))
    if not traffic:
        raise WorkloadError("nothing was offered to any pool in the last hour")
    slo: dict[Priority, Slo] = {p: Slo(wait_p99_s=min(getattr(pool.wait_targets, p)
                                 or config.monitoring.wait_objective_s
                                 for pool in config.pools.values()),
                  goodput=config.monitoring.wait_slo)
           for p in ("interactive", "standard", "batch")}
    return Workload(name="from-redis", traffic=traffic, slo=slo)


def dump_workload(workload: Workload) -> str:
    """The workload as TOML (what ``--from-redis --write-workload`` writes)."""
    data = workload.model_dump(exclude_none=True)
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, list | dict)]
    for t in data.get("traffic", []):
        lines += ["", "[[traffic]]", *(f"{k} = {_toml(v)}" for k, v in t.items())]
    for p, slo in data.get("slo", {}).items():
        lines += ["", f"[slo.{p}]", *(f"{k} = {_toml(v)}" for k, v in slo.items())]
    prices = data.get("prices", {})
    lines += ["", "[prices]", f"gpu_per_hour = {_toml(prices.get('gpu_per_hour', {}))}"]
    for name, price in prices.get("providers", {}).items():
        lines += ["", f"[prices.providers.{json.dumps(name)}]",
                  *(f"{k} = {_toml(v)}" for k, v in price.items())]
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)
