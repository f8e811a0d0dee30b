"""Prometheus metrics of one worker (`switchyard worker --metrics-port N`).

Every worker owns its registry (no process-wide state); all series carry ``pool``,
``worker`` and ``device`` labels:

- ``switchyard_batch_size`` / ``switchyard_batch_tokens``: histograms of the jobs and
  padded tokens of each batch run;
- ``switchyard_memory_budget_bytes``, ``switchyard_memory_used_bytes``,
  ``switchyard_memory_total_bytes``, ``switchyard_gpu_utilisation``: gauges, set before
  each batch and at each heartbeat;
- ``switchyard_generated_tokens_total`` (rate() of it is tokens/s),
  ``switchyard_time_to_first_token_seconds``: generation;
- ``switchyard_jobs_total{outcome}``, ``switchyard_oom_recoveries_total``,
  ``switchyard_too_large_total``;
- ``switchyard_duplicate_executions_total``: results dropped because their job already
  had one (it was re-queued while this worker ran it: first result wins);
- ``switchyard_cost_usd_total{provider, tenant}``: what bridges spent;
- ``switchyard_queue_wait_seconds{priority}``: admission to the start of the job's batch;
  ``switchyard_job_seconds{priority}``: admission to its outcome (end to end); their
  buckets hold the pool's wait targets, so an SLO's bucket is exact (``job_times.py``);
- ``python_gc_collections_total{generation}`` and ``python_gc_objects_collected_total``:
  the process's garbage collector (see ``broker/heap.py``), unlabelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    start_http_server,
)

from switchyard.broker.schemas import ChatResult
from switchyard.workers.job_times import JobTimes
from switchyard.workers.memory import MemoryReading

__all__ = ["WorkerMetrics"]

_LABELS = ("pool", "worker", "device")
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = tuple(2 ** i for i in range(4, 21, 2))
_TTFT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WorkerMetrics:
    def __init__(self, pool: str, worker: str, device: str,
                 targets: Iterable[float] = ()) -> None:
        """``targets``: wait targets (seconds) to add to the wait histograms' buckets."""
        self.registry = CollectorRegistry()
        GCCollector(registry=self.registry)
        labels = {"pool": pool, "worker": worker, "device": device}

        def make(kind: Any, name: str, doc: str, **kw: Any) -> Any:
            return kind(name, doc, _LABELS, registry=self.registry, **kw).labels(**labels)

        self.batch_size = make(Histogram, "switchyard_batch_size", "Jobs per batch run",
                               buckets=_SIZES)
        self.batch_tokens = make(Histogram, "switchyard_batch_tokens",
                                 "Padded tokens per batch run", buckets=_TOKENS)
        self.budget = make(Gauge, "switchyard_memory_budget_bytes",
                           "Memory the next batch may use")
        self.used = make(Gauge, "switchyard_memory_used_bytes", "Device memory in use")
        self.total = make(Gauge, "switchyard_memory_total_bytes", "Device memory")
        self.utilisation = make(Gauge, "switchyard_gpu_utilisation",
                                "GPU busy fraction (NVML; -1 where unknown)")
        self.tokens = make(Counter, "switchyard_generated_tokens", "Tokens generated")
        self.ttft = make(Histogram, "switchyard_time_to_first_token_seconds",
                         "Enqueue to first generated token", buckets=_TTFT)
        self.oom = make(Counter, "switchyard_oom_recoveries", "Batches split after OOM")
        self.too_large = make(Counter, "switchyard_too_large",
                              "Jobs refused: larger than the whole memory budget")
        self.duplicates = make(Counter, "switchyard_duplicate_executions",
                               "Results dropped: their job had a result already")
        self._jobs = Counter("switchyard_jobs", "Jobs finished, by outcome",
                             (*_LABELS, "outcome"), registry=self.registry)
        self._spend = Counter("switchyard_cost_usd", "USD spent at providers",
                              (*_LABELS, "provider", "tenant"), registry=self.registry)
        self._labels = labels
        self.times = JobTimes(labels, targets)
        self.registry.register(self.times)
        self._server: Any = None

    def batch(self, costs: Sequence[tuple[int, int]], outputs: Sequence[object]) -> None:
        """One batch run: its (texts, tokens) costs, and what the engine returned."""
        self.batch_size.observe(len(costs))
        self.batch_tokens.observe(sum(n for n, _ in costs) * max(t for _, t in costs))
        for output in outputs:
            if isinstance(output, ChatResult):
                self.tokens.inc(output.usage.output_tokens)
                if output.ttft_ms is not None:
                    self.ttft.observe(output.ttft_ms / 1000)

    def spend(self, provider: str, tenant: str, usd: float) -> None:
        self._spend.labels(**self._labels, provider=provider, tenant=tenant).inc(usd)

    def job(self, outcome: str, count: int = 1) -> None:
        if count:
            self._jobs.labels(**self._labels, outcome=outcome).inc(count)

    def memory(self, reading: MemoryReading, budget: int) -> None:
        self.budget.set(budget)
        self.total.set(reading.total)
        self.used.set(max(0, reading.total - reading.free))
        self.utilisation.set(-1 if reading.utilisation is None else reading.utilisation)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` from a background thread until :meth:`close`."""
        self._server, _ = start_http_server(port, addr, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
