"""The open-loop load of `switchyard bench overload`: Poisson arrivals of a mix of
priorities from two tenants, each request followed to its end, and the figures drawn
from them (goodput, queue wait, rejections)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from switchyard.broker.schemas import Priority
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.errors import AdmissionRejected, JobError, ResultTimeout
from switchyard.ops.bench.common import percentile

__all__ = ["Flow", "Sample", "Stats", "offer", "replay", "summarize"]


@dataclass(frozen=True)
class Flow:
    """One tenant's traffic: a share of the offered load, split across priorities."""

    tenant: str
    mix: tuple[tuple[Priority, float], ...]


@dataclass(slots=True)
class Sample:
    priority: Priority
    tenant: str
    offered_at: float
    decided_ms: float = 0.0
    """How long admission took to answer (submit call to return or raise)."""
    reason: str = ""
    """Why it was rejected ('' when admitted)."""
    job_id: str = ""
    created_ms: int = 0
    deadline_ms: int = 0
    state: str = ""
    """succeeded | failed | expired | lost (no outcome within deadline + grace)."""
    finished_ms: int = 0
    started_ms: int = 0


async def _one(client: AsyncClient, sample: Sample, deadline_s: float) -> None:
    t0, wall_ms = time.perf_counter(), int(time.time() * 1000)
    try:
        job = await client.embed("echo", "x", priority=sample.priority,
                                 tenant=sample.tenant or None,
                                 deadline_s=deadline_s, max_retries=0)
    except AdmissionRejected as exc:
        sample.decided_ms = (time.perf_counter() - t0) * 1000
        sample.reason = f"{exc.reason}/{exc.detail}" if exc.reason == "tenant_quota" else exc.reason
        return
    sample.decided_ms = (time.perf_counter() - t0) * 1000
    sample.job_id = job.id
    sample.created_ms = wall_ms  # from just before the call: its wait includes admission
    assert job.deadline_ms is not None
    sample.deadline_ms = job.deadline_ms
    try:
        await job.result(timeout=deadline_s + 10)
        sample.state = "succeeded"
    except JobError as exc:
        sample.state = "expired" if exc.code == "deadline_exceeded" else "failed"
    except ResultTimeout:
        sample.state = "lost"
    sample.finished_ms = int(time.time() * 1000)


async def offer(client: AsyncClient, flows: Sequence[tuple[Flow, float]],
                deadlines: dict[str, float], seconds: float, seed: int) -> tuple[list[Sample], int]:
    """Poisson arrivals for ``seconds``: each flow at its rate (jobs/s); returns once every
    request has been answered (rejected, or its job ended), with the start (epoch ms)."""
    rng = random.Random(seed)
    arrivals: list[tuple[float, Flow, Priority]] = []
    for flow, rate in flows:
        at = rng.expovariate(rate)
        while at < seconds:
            priority = rng.choices([p for p, _ in flow.mix], [w for _, w in flow.mix])[0]
            arrivals.append((at, flow, priority))
            at += rng.expovariate(rate)
    arrivals.sort(key=lambda a: a[0])
    return await replay(client, [(at, flow.tenant, p) for at, flow, p in arrivals], deadlines)


async def replay(client: AsyncClient, arrivals: Sequence[tuple[float, str, Priority]],
                 deadlines: dict[str, float]) -> tuple[list[Sample], int]:
    """Offer each (seconds from now, tenant, priority) at its time; returns once every
    request has been answered (rejected, or its job ended), with the start (epoch ms)."""
    samples: list[Sample] = []
    tasks: list[asyncio.Task[None]] = []
    start, start_ms = time.perf_counter(), int(time.time() * 1000)
    for at, tenant, priority in arrivals:
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sample = Sample(priority, tenant, at)
        samples.append(sample)
        tasks.append(asyncio.create_task(_one(client, sample, deadlines[priority])))
    await asyncio.gather(*tasks)
    await _started(client, [s for s in samples if s.job_id])
    return samples, start_ms


async def _started(client: AsyncClient, admitted: Sequence[Sample]) -> None:
    """When each job started on a worker (Redis clock, same host), from its record."""
    for i in range(0, len(admitted), 1000):
        chunk = admitted[i:i + 1000]
        pipe = client.redis.pipeline(transaction=False)
        for s in chunk:
            pipe.hget(client.keys.of_job(s.job_id).job(s.job_id), "started")
        for s, started in zip(chunk, await pipe.execute(), strict=True):
            s.started_ms = int(started or 0)


@dataclass
class Stats:
    """Figures for one group of samples over a run of ``seconds``."""

    offered: int
    goodput_per_s: float
    """Jobs that succeeded within their deadline, per second, over the offered load after
    its warm-up (those finished after it are not counted: a backlog drained later is not
    goodput then)."""
    wait_p50_ms: float
    wait_p99_ms: float
    rejected: int
    reject_mean_ms: float
    reject_p99_ms: float
    expired: int
    """Jobs that ended expired (never run)."""
    late_runs: int
    """Jobs run although their deadline had passed when they started: must be 0."""
    failed: int
    reasons: dict[str, int] = field(default_factory=dict)


def summarize(samples: Sequence[Sample], start_ms: int, seconds: float,
              warmup_s: float) -> Stats:
    """Goodput counts jobs finished from ``warmup_s`` into the load to its end."""
    admitted = [s for s in samples if s.job_id]
    begin_ms, end_ms = start_ms + warmup_s * 1000, start_ms + seconds * 1000
    good = [s for s in admitted if s.state == "succeeded" and s.finished_ms <= s.deadline_ms
            and begin_ms <= s.finished_ms <= end_ms]
    waits = [s.started_ms - s.created_ms for s in admitted if s.started_ms]
    rejected = [s for s in samples if s.reason]
    reasons: dict[str, int] = {}
    for s in rejected:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    decided = [s.decided_ms for s in rejected]
    return Stats(
        offered=len(samples), goodput_per_s=round(len(good) / (seconds - warmup_s), 1),
        wait_p50_ms=round(percentile(waits, 50), 1), wait_p99_ms=round(percentile(waits, 99), 1),
        rejected=len(rejected),
        reject_mean_ms=round(sum(decided) / len(decided), 3) if decided else 0.0,
        reject_p99_ms=round(percentile(decided, 99), 3) if decided else 0.0,
        expired=sum(s.state == "expired" for s in admitted),
        late_runs=sum(1 for s in admitted if s.state == "succeeded"
                      and s.started_ms > s.deadline_ms),
        failed=sum(s.state in ("failed", "lost") for s in admitted), reasons=reasons)
