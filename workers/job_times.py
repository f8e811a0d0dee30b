"""Queue wait and end-to-end time of every job, as two Prometheus histograms per
priority (``switchyard_queue_wait_seconds``, ``switchyard_job_seconds``), kept as plain
counts: one ``bisect`` a job and no lock (prometheus_client's ``Histogram.observe`` takes
two locks a value, which the echo benchmark's worker loop felt). Written by the worker's
event loop, read by the metrics server's thread: a scrape may see a job counted in a
bucket and not yet in the sum, which Prometheus tolerates."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from switchyard.broker.schemas import PRIORITIES, Priority

__all__ = ["RECENT", "WAIT_BUCKETS", "JobTimes", "Timed", "le"]

RECENT = 2048
"""Jobs whose waits :meth:`JobTimes.recent_wait_p99_ms` is taken over."""
BATCHES = 256
"""Batches :meth:`JobTimes.capacity` is measured over."""
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def le(bound: float) -> str:
    """A bucket bound as the ``le`` label carries it (prometheus_client's formatting), so
    a rule's selector names the bucket exactly."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class Timed(Protocol):
    """A job as the histograms see it (a worker's ``Pulled``)."""

    priority: Priority

    def admitted_ms(self) -> int: ...


class _Counts:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.buckets = [0] * (len(bounds) + 1)  # the last: past every bound (+Inf only)
        self.total = 0.0


class JobTimes(Collector):
    """Both histograms of one worker; ``labels``: its pool, worker and device."""

    def __init__(self, labels: dict[str, str], targets: Iterable[float] = ()) -> None:
        self.bounds = sorted({*WAIT_BUCKETS, *targets})
        self._labels = labels
        self._les = [le(b) for b in self.bounds]
        self._waits = {p: _Counts(self.bounds) for p in PRIORITIES}
        self._ends = {p: _Counts(self.bounds) for p in PRIORITIES}
        self._recent: deque[float] = deque(maxlen=RECENT)
        self._busy: deque[tuple[int, int]] = deque(maxlen=BATCHES)
        """(jobs, ms from taking the batch up to its finish) of the last batches."""

    def capacity(self) -> str:
        """Jobs a second this worker serves while busy, over its last ``BATCHES`` batches
        ('' before its first): what the planner's live recommendation divides by."""
        jobs = sum(j for j, _ in self._busy)
        busy = sum(ms for _, ms in self._busy)
        return f"{jobs * 1000 / max(busy, 1):.1f}" if self._busy else ""

    def finished(self, jobs: Iterable[Timed], began_ms: int, now_ms: int) -> None:
        """Jobs of one batch, taken up at ``began_ms`` and finished at ``now_ms``: their
        waits (admission to ``began_ms``) and end-to-end times (to ``now_ms``)."""
        bounds, recent, waits, ends = self.bounds, self._recent, self._waits, self._ends
        count = 0
        for job in jobs:
            count += 1
            admitted = job.admitted_ms()
            wait, total = (began_ms - admitted) / 1000, (now_ms - admitted) / 1000
            counts = waits[job.priority]
            counts.buckets[bisect_left(bounds, wait)] += 1
            counts.total += wait
            recent.append(wait)
            counts = ends[job.priority]
            counts.buckets[bisect_left(bounds, total)] += 1
            counts.total += total
        self._busy.append((count, now_ms - began_ms))

    def recent_wait_p99_ms(self) -> str:
        """The 99th percentile of the last ``RECENT`` jobs' waits, in ms ('' if none)."""
        if not self._recent:
            return ""
        ranked = sorted(self._recent)
        return f"{ranked[min(len(ranked) - 1, int(len(ranked) * 0.99))] * 1000:.0f}"

    def collect(self) -> Iterator[Metric]:
        names = [*self._labels, "priority"]
        for name, doc, series in (
                ("switchyard_queue_wait_seconds", "Admission to the job's start", self._waits),
                ("switchyard_job_seconds", "Admission to the job's outcome", self._ends)):
            family = HistogramMetricFamily(name, doc, labels=names)
            for priority, counts in series.items():
                running, buckets = 0, []
                for le, n in zip([*self._les, "+Inf"], list(counts.buckets), strict=True):
                    running += n
                    buckets.append((le, running))
                family.add_metric([*self._labels.values(), priority], buckets, counts.total)
            yield family
