"""Finishing a batch: what its outputs mean for the queue, in one round trip or few.

Outputs that are not outcomes go first: ``Released`` jobs (the engine could not take
them) are handed back to the queue with no attempt spent, ``Crashed`` ones re-queued with
attempts + 1 (dead-lettered past the limit). The rest are written (``complete``: outcome,
reply, ack; first result wins), after every delta they streamed has landed, and counted,
off the callers' latency. With JSON logs (``--log-format json``) each finished job gets
a line on the ``switchyard.jobs`` logger: job id, tenant, pool, priority, outcome, its
timings and the trace parent the gateway gave it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from switchyard.broker.keys import Keys
from switchyard.broker.retry import until_done
from switchyard.broker.schemas import ErrorInfo, now_ms
from switchyard.workers.deltas import DeltaPublisher
from switchyard.workers.engines.base import Engine, EngineOutput, Released
from switchyard.workers.execute import Crashed
from switchyard.workers.ledger import Ledger, dead_letters, outcomes
from switchyard.workers.metrics import WorkerMetrics
from switchyard.workers.puller import Pulled
from switchyard.workers.spend import record_spend

__all__ = ["Finisher", "Starting", "WorkerStats"]

log = logging.getLogger(__name__)
jobs_log = logging.getLogger("switchyard.jobs")

Starting = asyncio.Task[dict[int, str]] | Literal["with"] | None
"""A batch's ``start`` as its finish sees it: still in flight (the task); not sent, so
the finish sends it in its own round trip (``"with"``); or landed before the engine ran."""


@dataclass
class WorkerStats:
    batches: int = 0
    jobs: int = 0
    failed: int = 0
    dead_lettered: int = 0
    released: int = 0
    oom_recoveries: int = 0
    too_large: int = 0
    duplicates: int = 0
    """Results dropped because their job had one already (first result wins)."""


@dataclass
class Finisher:
    ledger: Ledger
    deltas: DeltaPublisher
    stats: WorkerStats
    metrics: WorkerMetrics
    engine: Engine
    redis: aioredis.Redis
    keys: Keys
    job_lines: bool = False
    """One log line a finished job (JSON logs only: see the module doc)."""

    async def finish(self, run: Sequence[Pulled], outputs: Sequence[EngineOutput],
                     starting: Starting = None, began: int = 0) -> None:
        """``began``: when the batch was taken up (epoch ms; 0: not known), the end of its
        jobs' queue wait."""
        if self.deltas.busy:
            await self.deltas.drain()  # every streamed delta lands before its job's outcome
            self.deltas.forget([p.entry.job_id for p in run])
        released, run, outputs = _set_aside(run, outputs, Released)
        crashed, run, outputs = _set_aside(run, outputs, Crashed)
        if (released or crashed) and isinstance(starting, asyncio.Task):
            await starting  # (a start landing after them would mark those jobs running)
        if released:  # the engine could not take them: back to the queue, no attempt spent
            await self.ledger.release([p for p, _ in released])
            self.stats.released += len(released)
        if crashed:  # attempts + 1, or dead-lettered past the limit
            verdicts = await self.ledger.requeue([(p, o.message) for p, o in crashed])
            self.stats.dead_lettered += verdicts.count("dead")
        if run:
            await self._complete(run, outputs, starting, began)

    async def _complete(self, run: Sequence[Pulled], outputs: Sequence[EngineOutput],
                        starting: Starting, began: int) -> None:
        items, failed = outcomes(run, outputs)
        # (not `+= await`: finishes run concurrently)
        finished = await self.ledger.finish(items, start=run if starting == "with" else ())
        self.stats.jobs += finished.written
        duplicates = finished.duplicates
        if starting is not None:  # results of jobs start had ended were dropped: expected
            verdicts = finished.started if starting == "with" else await starting
            ended = {p.entry.job_id for p in run if verdicts[id(p)] != "run"}
            if ended:
                self.deltas.forget(list(ended))
                duplicates = sum(1 for job_id in finished.dropped if job_id not in ended)
        if duplicates:
            self.stats.duplicates += duplicates
            self.metrics.duplicates.inc(duplicates)
            log.warning("%d results dropped: their jobs had results already (re-queued while "
                        "running here)", duplicates)
        # Counted after the outcomes went out, off the path of the callers' latency.
        self.stats.failed += failed
        self.metrics.job("succeeded", len(items) - failed)
        self.metrics.job("failed", failed)
        now = now_ms()
        self.metrics.times.finished(run, began or now, now)
        if self.job_lines:
            _log_jobs(run, outputs, now)
        self.metrics.batch([p.cost_by(self.engine.cost) for p in run], outputs)
        if self.engine.name == "bridge":
            await until_done(lambda: record_spend(self.redis, self.keys, self.metrics, run,
                                                  outputs), "record_spend")

    async def dead_letter(self, bad: Sequence[Pulled]) -> None:
        for p in bad:
            log.warning("dead-lettering entry %s of %s: %s", p.entry.entry_id, p.entry.stream,
                        p.error)
        await self.ledger.finish(dead_letters(bad))
        self.stats.dead_lettered += len(bad)


def _log_jobs(run: Sequence[Pulled], outputs: Sequence[EngineOutput], now: int) -> None:
    for p, output in zip(run, outputs, strict=True):
        envelope = p.envelope
        outcome = output.code if isinstance(output, ErrorInfo) else "succeeded"
        jobs_log.info("job %s %s", p.entry.job_id, outcome, extra={
            "job_id": p.entry.job_id, "pool": p.keys.pool, "priority": p.priority,
            "tenant": envelope and envelope.tenant, "outcome": outcome,
            "traceparent": envelope and envelope.trace,
            "timings": {"e2e_ms": now - p.admitted_ms()}})


def _set_aside(run: Sequence[Pulled], outputs: Sequence[EngineOutput], kind: type[ErrorInfo]
               ) -> tuple[list[tuple[Pulled, ErrorInfo]], list[Pulled], list[EngineOutput]]:
    """(the jobs whose output is a ``kind``, with it; the others; their outputs)."""
    aside = [(p, o) for p, o in zip(run, outputs, strict=True) if isinstance(o, kind)]
    if not aside:
        return [], list(run), list(outputs)
    kept = [i for i, o in enumerate(outputs) if not isinstance(o, kind)]
    return aside, [run[i] for i in kept], [outputs[i] for i in kept]
