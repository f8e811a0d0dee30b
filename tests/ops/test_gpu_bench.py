"""`switchyard bench gpu` as CI runs it: on CPU, the tiny Llama, a few requests. The
script is the one a GPU runs (there with the 1B Llama, NVML and a real OOM)."""

from __future__ import annotations

import pytest

from switchyard.ops.bench.gpu import GpuBenchOptions, render, run_gpu_bench


@pytest.mark.slow
def test_the_gpu_bench_runs_on_cpu_as_a_smoke_test() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run `switchyard bench gpu` itself")
    report = run_gpu_bench(GpuBenchOptions(concurrency=(1, 4), requests=8, max_tokens=16,
                                           oom_jobs=6))
    text = render(report)
    assert report.model == "builtin:tiny-llama" and report.device == "cpu"
    assert [r["concurrency"] for r in report.rows] == [1, 4]
    for row in report.rows:
        assert row["queue_tokens_per_s"] > 0 and row["bare_tokens_per_s"] > 0
        assert row["generate_batch_tokens_per_s"] > 0
    assert report.oom_events >= 1 and not report.oom_real
    assert report.oom_jobs == report.oom_jobs_ok == 6
    assert "6/6 jobs succeeded once" in text and report.budget_bytes > 0
