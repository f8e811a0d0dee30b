"""The workers' wait and end-to-end histograms (issue 20): what Prometheus reads from a
worker's registry, its buckets holding the pool's wait targets."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.broker.schemas import Priority
from switchyard.workers.metrics import WorkerMetrics


def _samples(metrics: WorkerMetrics, name: str) -> dict[tuple[str, str], float]:
    """(priority, le or sample suffix) -> value, for one histogram family."""
    text = generate_latest(metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                out[s.labels["priority"], s.labels.get("le", s.name)] = s.value
    return out


@dataclass
class _Job:
    priority: Priority
    admitted: int

    def admitted_ms(self) -> int:
        return self.admitted


def test_waits_land_in_their_buckets_and_the_targets_are_buckets() -> None:
    metrics = WorkerMetrics("echo", "w1", "cpu", targets=[0.3, 1.0])
    # Taken up at 10,000 ms, finished at 10,001: waits 0.2, 0.3, 0.31 and 500 s.
    metrics.times.finished([_Job("interactive", 9_800), _Job("interactive", 9_700),
                            _Job("interactive", 9_690), _Job("batch", 10_000 - 500_000)],
                           10_000, 10_001)
    metrics.times.finished([_Job("standard", 20_000)], 20_000, 20_004)
    waits = _samples(metrics, "switchyard_queue_wait_seconds")
    assert waits["interactive", "0.25"] == 1 and waits["interactive", "0.3"] == 2
    assert waits["interactive", "0.5"] == 3 and waits["interactive", "+Inf"] == 3
    assert waits["interactive", "switchyard_queue_wait_seconds_count"] == 3
    assert abs(waits["interactive", "switchyard_queue_wait_seconds_sum"] - 0.81) < 1e-9
    assert waits["batch", "120.0"] == 0 and waits["batch", "+Inf"] == 1  # past every bound
    assert waits["standard", "0.005"] == 1  # taken up as it was admitted
    fresh = _samples(WorkerMetrics("echo", "w2", "cpu"), "switchyard_queue_wait_seconds")
    assert all(fresh[p, "+Inf"] == 0 for p in ("interactive", "standard", "batch"))
    ends = _samples(metrics, "switchyard_job_seconds")
    assert ends["standard", "0.005"] == 1 and ends["standard", "+Inf"] == 1
    assert ends["interactive", "0.25"] == 1 and ends["interactive", "+Inf"] == 3
    assert metrics.times.recent_wait_p99_ms() == "500000"
    # 5 jobs served in 1 + 4 ms of batches: what the planner's live advice divides by
    assert metrics.times.capacity() == "1000.0"
    assert WorkerMetrics("echo", "w3", "cpu").times.capacity() == ""
