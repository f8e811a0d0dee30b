"""A pool's service curve: what one worker does per batch, as a small versioned JSON file.

``switchyard profile`` measures one (``profiling.py``); the simulator reads it through
:meth:`Profile.batch_ms`. A point is one batch size (and input length): the saturated
worker's throughput and the time per batch it implies, measured through the real queue
(so it holds the platform's own per-batch cost). Generate pools add time to first token
and time per output token; bridge pools hold latency and errors per provider target.

An ``echo`` pool without a measured profile gets :func:`nominal_profile`, built from its
configured delays (marked ``"source": "nominal"``).
"""

from __future__ import annotations

import bisect
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.broker.config import PoolConfig
from switchyard.ops.planning.errors import ProfileError

__all__ = ["VERSION", "Hardware", "Point", "Profile", "TargetPoint", "hardware",
           "load_profile", "nominal_profile", "timestamp"]

VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hardware(_Model):
    host: str
    cpu: str
    cpus: int
    gpu: str | None = None
    device: str = "auto"


class Point(_Model):
    batch: Annotated[int, Field(ge=1)]
    input_tokens: Annotated[int, Field(ge=0)] = 1
    output_tokens: Annotated[int, Field(ge=0)] = 0
    jobs_per_s: Annotated[float, Field(gt=0)]
    batch_ms: Annotated[float, Field(gt=0)]
    ttft_ms: float | None = None
    per_token_ms: float | None = None


class TargetPoint(_Model):
    provider: str
    model: str
    jobs: int
    latency_p50_ms: float
    latency_p99_ms: float
    error_rate: Annotated[float, Field(ge=0, le=1)]


class Profile(_Model):
    version: Literal[1] = 1
    pool: str
    engine: str
    model: str
    source: Literal["measured", "nominal"] = "measured"
    hardware: Hardware
    created: str
    points: list[Point] = []
    targets: list[TargetPoint] = []

    def batch_ms(self, batch: int, input_tokens: float = 1.0) -> float:
        """Time one batch of ``batch`` jobs takes: linear between measured sizes (and
        past the largest, along the last two), at the nearest measured input length."""
        if not self.points:
            raise ProfileError(f"profile of pool {self.pool!r} has no batch points")
        lengths = sorted({p.input_tokens for p in self.points})
        length = min(lengths, key=lambda n: abs(n - input_tokens))
        pts = sorted((p.batch, p.batch_ms) for p in self.points if p.input_tokens == length)
        sizes = [b for b, _ in pts]
        if len(pts) == 1:
            return pts[0][1] * batch / pts[0][0]
        i = min(max(1, bisect.bisect_left(sizes, batch)), len(pts) - 1)
        (b0, t0), (b1, t1) = pts[i - 1], pts[i]
        return max(0.1, t0 + (t1 - t0) * (batch - b0) / (b1 - b0))

    def curve(self, max_batch: int) -> Callable[[int, int], float]:
        """Batch time by (jobs, longest input tokens): the measured sizes' table at each
        measured length, linear between lengths (and flat past the shortest and longest),
        built once (the simulator asks per batch)."""
        lengths = sorted({p.input_tokens for p in self.points})
        tables = [[self.batch_ms(n, length) for n in range(max_batch + 1)] for length in lengths]

        def batch_ms(n: int, tokens: int) -> float:
            i = bisect.bisect_left(lengths, tokens)
            if i == 0:
                return tables[0][n]
            if i == len(lengths):
                return tables[-1][n]
            lo, hi = lengths[i - 1], lengths[i]
            share = (tokens - lo) / (hi - lo)
            return tables[i - 1][n] + share * (tables[i][n] - tables[i - 1][n])
        return batch_ms

    def ttft_ms(self, batch: int) -> float:
        """Time to first token once started (generate pools; 0 when not measured)."""
        known = sorted((p.batch, p.ttft_ms) for p in self.points if p.ttft_ms is not None)
        if not known:
            return 0.0
        return min(known, key=lambda bt: abs(bt[0] - batch))[1]

    def jobs_per_s(self, batch: int, input_tokens: float = 1.0) -> float:
        return batch * 1000 / self.batch_ms(batch, input_tokens)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(), indent=2) + "\n")


def load_profile(path: str | Path) -> Profile:
    try:
        return Profile.model_validate_json(Path(path).read_text())
    except OSError as exc:
        raise ProfileError(f"profile {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise ProfileError(f"profile {path}: {exc}") from None


def hardware(device: str) -> Hardware:
    """This host: its CPU, and its first GPU where NVML finds one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return Hardware(host=platform.node(), cpu=cpu, cpus=os.cpu_count() or 1, gpu=_gpu(),
                    device=device)


def _gpu() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() == 0:
                return None
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: no GPU to record
        return None


def nominal_profile(name: str, pool: PoolConfig) -> Profile:
    """An echo pool's curve from its configured delays (no platform cost in it)."""
    if pool.engine != "echo":
        raise ProfileError(f"pool {name!r} ({pool.engine}) needs a measured profile: "
                           f"run `switchyard profile --pool {name}`")
    sizes = sorted({1, pool.max_batch})
    points = [Point(batch=b, jobs_per_s=b * 1000 / max(0.1, ms), batch_ms=max(0.1, ms))
              for b in sizes for ms in [pool.delay_ms + pool.job_delay_ms * b]]
    return Profile(pool=name, engine="echo", model=pool.model, source="nominal",
                   hardware=hardware(pool.device), created=timestamp(), points=points)


def timestamp() -> str:
    """Now, as a profile records when it was made (UTC, ISO 8601)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
