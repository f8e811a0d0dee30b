"""`switchyard bench overload` end to end, small: real Redis, echo worker processes, the
open-loop load with and without admission control, and its plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.ops.bench.overload import OverloadOptions, check, render, run_overload_bench


@pytest.mark.slow
def test_overload_bench_runs_and_holds_its_targets_at_twice_capacity(tmp_path: Path) -> None:
    plot = tmp_path / "overload.png"
    report = run_overload_bench(OverloadOptions(
        workers=1, batch=4, service_ms=50, loads=(2.0,), seconds=6, plot=plot))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 40 < report.capacity_per_s <= 80  # 4 jobs per 50 ms, less overhead
    modes = {(r.mode, r.group) for r in report.rows}
    assert ("admission control", "interactive") in modes
    assert ("no admission control", "steady") in modes
    assert "rejected by reason" in render(report)
    # The hard guarantees hold on any machine; goodput and wait targets are the bench's.
    failures = [f for f in check(report) if "jobs ran past" in f or "steady" in f]
    assert not failures, failures
    controlled = {r.group: r.stats for r in report.rows if r.mode == "admission control"}
    assert controlled["all"].rejected > 0 and controlled["greedy"].rejected > 0


@pytest.mark.slow
def test_the_defaults_bench_answers_every_job_by_its_deadline() -> None:
    """`bench overload --defaults`, short: the guarantees that hold on any machine (the
    figures are the bench's): nothing admitted goes unanswered past its deadline, nothing
    expires after admission in a steady load, and the worker stays busy.

    Slower batches than the bench's (25 ms, not 5): at 5 ms, 3x is over 3,000 offers a
    second from one Python process, which on a 2-core machine takes the CPU the worker
    needs, so its capacity under that load fell below what was measured alone (goodput
    43 % of capacity in one CI run, with nothing wrong in admission)."""
    from switchyard.ops.bench.defaults import DefaultsOptions, render, run_defaults_bench

    report = run_defaults_bench(DefaultsOptions(loads=(3.0,), seconds=4, runs=1, service_ms=25.0))
    level = report.levels[0]
    assert level.unanswered == 0, render(report)
    assert level.expired <= level.admitted // 100, render(report)
    assert level.rejected and set(level.reasons) == {"deadline_unmeetable"}, render(report)
    assert level.goodput_per_s > 0.5 * report.capacity_per_s, render(report)
