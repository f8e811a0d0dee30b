"""The plan's search and prices: the cheapest worker count meeting the SLOs, spill where
the provider is cheaper than a worker, TTFT objectives, provider rate limits."""

from __future__ import annotations

from pathlib import Path

from switchyard.broker.config import SwitchyardConfig
from switchyard.ops.planning.planner import plan_pool
from switchyard.ops.planning.profile import Hardware, Point, Profile, nominal_profile
from switchyard.ops.planning.workload import Workload


def _config(cost_per_hour: float = 1.0) -> SwitchyardConfig:
    return SwitchyardConfig.model_validate({
        "pools": {"gpu": {"engine": "echo", "max_batch": 4, "delay_ms": 100.0,
                          "cost_per_hour": cost_per_hour},
                  "cloud": {"engine": "bridge", "targets": [
                      {"provider": "p", "model": "m", "price_in": 1.0}]}},
        "models": {"e": {"pool": "gpu", "overflow": "cloud"}, "local": {"pool": "gpu"}},
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    })


def _workload(model: str, rate: float, **extra: object) -> Workload:
    return Workload.model_validate({
        "seconds": 60, "traffic": [{"model": model, "priority": "interactive", "rate": rate,
                                    "input_tokens": {"mean": 100}, "deadline_s": 2.0}],
        "slo": {"interactive": {"wait_p99_s": 0.5, "goodput": 0.99}}, **extra})


def test_the_plan_is_the_fewest_workers_meeting_the_slos_without_overflow() -> None:
    config = _config()
    workload = _workload("local", 100.0)  # a worker does 4 jobs / 100 ms: 40/s
    plan = plan_pool(config, workload, "gpu", workload.traffic,
                     nominal_profile("gpu", config.pools["gpu"]))
    met = [c.workers for c in plan.tried if c.meets]
    assert plan.chosen.meets and plan.chosen.workers == min(met) >= 3
    assert all(not c.meets for c in plan.tried if c.workers < plan.chosen.workers)
    assert plan.chosen.provider_usd_h == 0 and plan.chosen.gpu_usd_h == plan.chosen.workers
    assert plan.alternatives["all on providers"] is None  # no overflow route
    assert [load for load, _ in plan.load_curve] == [0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5]


def test_spill_is_chosen_where_the_provider_is_cheaper_than_a_worker() -> None:
    config = _config(cost_per_hour=50.0)  # a dear GPU; the provider: $1 per million tokens
    workload = _workload("e", 100.0)
    plan = plan_pool(config, workload, "gpu", workload.traffic,
                     nominal_profile("gpu", config.pools["gpu"]))
    gpus = plan.alternatives["all on GPUs"]
    assert gpus is not None and gpus.meets and gpus.spilled == 0
    assert plan.chosen.meets and plan.chosen.spilled > 0
    assert plan.chosen.workers < gpus.workers and plan.chosen.usd_h < gpus.usd_h
    providers = plan.alternatives["all on providers"]
    assert providers is not None  # 100 jobs/s x 100 tokens at $1/M: $0.036 an hour
    assert abs(providers.provider_usd_h - 100 * 100 * 3600 / 1e6) < 0.01 * 36


def test_a_provider_over_its_rate_limit_is_refused() -> None:
    config = _config()
    workload = _workload("e", 100.0, prices={"providers": {"p": {"input_per_mtok": 1.0,
                                                                  "rpm": 600}}})
    plan = plan_pool(config, workload, "gpu", workload.traffic,
                     nominal_profile("gpu", config.pools["gpu"]))
    providers = plan.alternatives["all on providers"]
    assert providers is not None and not providers.meets
    assert abs(providers.refused - 0.9) < 0.02  # 600 of about 6,000 a minute
    assert "rpm" in providers.misses[0]


def test_a_ttft_objective_counts_the_time_to_first_token() -> None:
    config = _config()
    profile = Profile(pool="gpu", engine="generate", model="m", created="now",
                      hardware=Hardware(host="h", cpu="c", cpus=1),
                      points=[Point(batch=b, jobs_per_s=b * 10.0, batch_ms=100.0,
                                    ttft_ms=400.0) for b in (1, 4)])
    workload = Workload.model_validate({
        "seconds": 60, "traffic": [{"model": "local", "priority": "interactive",
                                    "rate": 5.0, "deadline_s": 10.0}],
        "slo": {"interactive": {"ttft_p99_s": 0.3}}})
    plan = plan_pool(config, workload, "gpu", workload.traffic, profile, folder=Path())
    assert not plan.chosen.meets  # 400 ms to the first token once started, at any size
    assert all("TTFT" in c.misses[0] for c in plan.tried)
