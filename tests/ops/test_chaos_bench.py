"""`switchyard bench chaos`, small: real worker and watchdog processes killed, Redis
restarted, and still every admitted job ends once."""

from __future__ import annotations

from switchyard.ops.bench.chaos import ChaosOptions, check, render, run_chaos_bench


def test_a_short_chaos_run_loses_nothing_and_answers_once() -> None:
    report = run_chaos_bench(ChaosOptions(jobs=600, rate=100, kill_every_s=1.5,
                                          heartbeat_ttl_s=1.5))
    text = render(report)
    assert report.admitted == 600, text
    assert report.outcomes == {"succeeded": 600}, text
    assert report.lost == 0 and report.duplicate_visible == 0, text
    assert report.worker_kills >= 3, text
    assert any("Redis started again" in e for e in report.events), text
    assert not [f for f in check(report) if "re-dispatch" not in f], text
