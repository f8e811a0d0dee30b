"""A discrete-event simulator of one pool: arrivals, admission, priority streams, batches.

Each arrival is offered to its priority stream and decided by the admission model of
``enqueue.lua`` (``broker/admission_model.py``: the same caps, predicted start and spill,
shedding and age gate, on the same drain and admission windows, updated as
``complete.lua`` and ``enqueue.lua`` update them). An idle worker takes up to
``max_batch`` queued jobs at once, slot by slot in the workers' own priority order with
the anti-starvation share (``workers/scheduler.py``); a job past its start deadline is
dropped as expired (it never runs), and the batch lasts the profile's time for the jobs
it runs. A job the pool refuses (full, spill, shed) goes to the route's overflow, as the
client sends it (a provider, at its latency, within its rpm), or is refused where there
is none; a refused call is retried by its client ``retries`` times, ``retry_after_s``
later.

A worker holds what it reads, as the real puller does: before each batch it tops its
buffer up to ``window`` entries a priority (``max_batch x pack_window``) from the
streams, and takes the batch from that buffer; entries it holds are delivered (the age
gate looks past them) but wait for it alone.

Simplifications, stated: one partition (the pool's streams as one); a job starts the
instant a worker is free (no read or ``start`` round trip: the profile's batch time holds
them); no tenants, no idempotency, no urgent reordering of the buffer.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from switchyard.broker.admission_model import (
    AdmissionArgs,
    Drain,
    Stream,
    admit,
    admitted_window,
    drained_window,
)
from switchyard.broker.schemas import PRIORITIES
from switchyard.ops.bench.common import percentile
from switchyard.workers.scheduler import PriorityScheduler

__all__ = ["Offer", "PoolModel", "PriorityResult", "SimResult", "simulate"]


@dataclass(frozen=True)
class Offer:
    """One job offered: when (s), its priority index, tokens, deadline and its client's
    retries."""

    at: float
    priority: int
    input_tokens: int
    output_tokens: int
    deadline_s: float
    retries: int = 0
    retry_after_s: float = 1.0
    spill_ms: int = 0
    """The predicted wait past which its pool does not admit it (``lanes.spill_ms``)."""


@dataclass(frozen=True)
class PoolModel:
    workers: int
    max_batch: int
    batch_ms: Callable[[int, int], float]
    """Time one batch takes, by its jobs and its longest input (the profile's curve)."""
    args: tuple[AdmissionArgs, AdmissionArgs, AdmissionArgs]
    """Each priority's admission policy (``spill_ms`` comes with each offer)."""
    lower_share: float = 0.0
    overflow: bool = False
    provider_ms: float = 500.0
    provider_rpm: float = 0.0
    ttft_ms: float = 0.0
    window: int = 0
    """Entries a worker holds per priority (``max_batch x pack_window``; 0: max_batch)."""


@dataclass
class PriorityResult:
    offered: int = 0
    admitted: int = 0
    done: int = 0
    good: int = 0
    rejected: int = 0
    spilled: int = 0
    expired: int = 0
    waits_ms: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    def wait_ms(self, q: float) -> float:
        """The queue wait's q-th percentile (as the benches take it; 0 when none ran)."""
        return percentile(self.waits_ms, q) if self.waits_ms else 0.0


@dataclass
class SimResult:
    seconds: float
    priorities: dict[str, PriorityResult]
    busy_s: float = 0.0
    spill_tokens_in: int = 0
    spill_tokens_out: int = 0
    wall_s: float = 0.0

    @property
    def offered(self) -> int:
        return sum(r.offered for r in self.priorities.values())

    def share(self, what: str) -> float:
        return float(sum(getattr(r, what) for r in self.priorities.values())) / max(
            1, self.offered)


class _Worker:
    """A worker's scheduler and its buffers: entries it has read, one deque a priority."""

    __slots__ = ("buffers", "scheduler")

    def __init__(self, share: float) -> None:
        self.scheduler = PriorityScheduler(share)
        self.buffers: list[deque[_Job]] = [deque(), deque(), deque()]


@dataclass(slots=True)
class _Job:
    offer: Offer
    arrived_ms: float
    deadline_ms: float
    tries: int


class _Sim:
    def __init__(self, pool: PoolModel, seconds: float) -> None:
        self.pool = pool
        self.queues: list[deque[_Job]] = [deque(), deque(), deque()]
        self.depth = [0, 0, 0]
        self.drains = [Drain(), Drain(), Drain()]
        self.results: dict[str, PriorityResult] = {p: PriorityResult() for p in PRIORITIES}
        self.out = SimResult(seconds, self.results)
        self.idle = [_Worker(pool.lower_share) for _ in range(pool.workers)]
        self.window = pool.window or pool.max_batch
        self.done: list[tuple[float, int, _Worker, list[_Job], list[int]]] = []
        self.retries: list[tuple[float, int, _Job]] = []
        self.seq = 0
        self.provider_minute: tuple[int, int] = (-1, 0)
        self.args_cache: dict[tuple[int, int], AdmissionArgs] = {}

    def args(self, priority: int, spill_ms: int) -> AdmissionArgs:
        found = self.args_cache.get((priority, spill_ms))
        if found is None:
            found = self.args_cache[priority, spill_ms] = replace(
                self.pool.args[priority], spill_ms=spill_ms)
        return found

    def arrive(self, job: _Job, now: float) -> None:
        o, ms = job.offer, int(now)
        res = self.results[PRIORITIES[o.priority]]
        (q0, q1, q2), depth, drains = self.queues, self.depth, self.drains
        streams = (Stream(depth[0], int(q0[0].arrived_ms) if q0 else None, drains[0]),
                   Stream(depth[1], int(q1[0].arrived_ms) if q1 else None, drains[1]),
                   Stream(depth[2], int(q2[0].arrived_ms) if q2 else None, drains[2]))
        args = self.args(o.priority, o.spill_ms)
        verdicts, drain = admit(streams, o.priority, args, 1, ms)
        verdict = verdicts[0]
        admitted = int(verdict == "admitted")
        if args.pooled:  # (the script keeps the admission window with the pool's keys)
            drain = admitted_window(drain, admitted, ms)
        self.drains[o.priority] = drain
        if admitted:
            res.admitted += 1
            job.arrived_ms = now
            self.queues[o.priority].append(job)
            self.depth[o.priority] += 1
            self.start_idle(now)
        elif self.pool.overflow and self.provider_takes(now):  # (the client moves any
            # refusal but a tenant's to the route's overflow pool)
            res.spilled += 1
            finished = now + self.pool.provider_ms
            self.out.spill_tokens_in += o.input_tokens
            self.out.spill_tokens_out += o.output_tokens
            self.finish(res, job, finished)
        else:
            reason = {"spill": "deadline_unmeetable", "aged": "shed",
                      "rejected": "pool_full"}.get(verdict, verdict)
            if self.pool.overflow:
                reason = "provider_rate_limit"
            if job.tries < o.retries:
                job.tries += 1
                self.seq += 1
                again = now + o.retry_after_s * 1000
                job.deadline_ms = again + o.deadline_s * 1000  # (a new call, a new deadline)
                heapq.heappush(self.retries, (again, self.seq, job))
                return
            res.rejected += 1
            res.reasons[reason] = res.reasons.get(reason, 0) + 1

    def provider_takes(self, now: float) -> bool:
        if self.pool.provider_rpm <= 0:
            return True
        minute, n = self.provider_minute
        if int(now // 60_000) != minute:
            minute, n = int(now // 60_000), 0
        self.provider_minute = (minute, n + 1)
        return n < self.pool.provider_rpm

    def finish(self, res: PriorityResult, job: _Job, finished: float) -> None:
        res.done += 1
        res.good += finished <= job.deadline_ms

    def start_idle(self, now: float) -> None:
        while self.idle and any(self.queues):
            self.start(self.idle.pop(), now)

    def start(self, worker: _Worker, now: float) -> None:
        """The worker tops its buffers up from the streams (``window`` a priority), and
        runs a batch from them; with nothing to run it waits (idle)."""
        run: list[_Job] = []
        counts = [0, 0, 0]
        while not run and (any(self.queues) or any(worker.buffers)):
            for i, queue in enumerate(self.queues):
                buffer = worker.buffers[i]
                while queue and len(buffer) < self.window:
                    buffer.append(queue.popleft())
            for i in self.slots(worker):
                job = worker.buffers[i].popleft()
                res = self.results[PRIORITIES[i]]
                if now > job.deadline_ms:  # (start.lua skips it: it never runs)
                    res.expired += 1
                    self.depth[i] -= 1
                    continue
                res.waits_ms.append(now - job.arrived_ms)
                run.append(job)
                counts[i] += 1
        if not run:
            self.idle.append(worker)
            return
        took = self.pool.batch_ms(len(run), max(j.offer.input_tokens for j in run))
        self.out.busy_s += took / 1000
        self.seq += 1
        heapq.heappush(self.done, (now + took, self.seq, worker, run, counts))

    def slots(self, worker: _Worker) -> list[int]:
        """The priority (index) of each slot of the next batch, in the workers' order."""
        sizes = [len(b) for b in worker.buffers]
        present = [i for i in range(3) if sizes[i]]
        if len(present) <= 1:  # (the scheduler gives one priority every slot, no credit)
            return [present[0]] * min(self.pool.max_batch, sizes[present[0]]) if present else []
        waiting = dict(zip(PRIORITIES, sizes, strict=True))
        out = []
        scheduler = worker.scheduler
        for _ in range(self.pool.max_batch):
            chosen = scheduler.choose(waiting)
            if chosen is None:
                break
            scheduler.commit(chosen, waiting)
            waiting[chosen] -= 1
            out.append(PRIORITIES.index(chosen))
        return out

    def complete(self, now: float, worker: _Worker, run: list[_Job], counts: list[int]
                 ) -> None:
        for i, n in enumerate(counts):
            if n:
                self.depth[i] -= n
                self.drains[i] = drained_window(self.drains[i], n, int(now))
        for job in run:
            self.finish(self.results[PRIORITIES[job.offer.priority]], job, now)
        if any(self.queues) or any(worker.buffers):
            self.start(worker, now)
        else:
            self.idle.append(worker)


def simulate(pool: PoolModel, offers: Sequence[Offer], seconds: float) -> SimResult:
    """Run the offers (sorted by time) through the pool; every job ends (done, expired or
    refused) before this returns."""
    started = time.perf_counter()
    sim = _Sim(pool, seconds)
    arrivals = iter(offers)
    nxt = next(arrivals, None)
    inf = math.inf
    while True:
        t_arr = nxt.at * 1000 if nxt is not None else inf
        t_done = sim.done[0][0] if sim.done else inf
        t_retry = sim.retries[0][0] if sim.retries else inf
        now = min(t_arr, t_done, t_retry)
        if now == inf:
            break
        if t_done == now:
            _, _, worker, run, counts = heapq.heappop(sim.done)
            sim.complete(now, worker, run, counts)
        elif t_retry == now:
            sim.arrive(heapq.heappop(sim.retries)[2], now)
        else:
            assert nxt is not None
            sim.results[PRIORITIES[nxt.priority]].offered += 1
            sim.arrive(_Job(nxt, now, now + nxt.deadline_s * 1000, 0), now)
            nxt = next(arrivals, None)
    sim.out.wall_s = time.perf_counter() - started
    return sim.out
