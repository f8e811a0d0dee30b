"""The planner's simulator against queueing theory and against the platform's own rules:
M/D/1 waits (Pollaczek-Khinchine), the anti-starvation share, deadlines, spill and its
price, admission by the admission model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from switchyard.broker.admission_model import AdmissionArgs
from switchyard.broker.config import load_config
from switchyard.dispatcher.lanes import spill_ms
from switchyard.ops.planning.models import admission_args, offers_for, pool_model
from switchyard.ops.planning.profile import nominal_profile
from switchyard.ops.planning.simulator import Offer, PoolModel, simulate
from switchyard.ops.planning.workload import Burst, Traffic

OPEN = tuple(AdmissionArgs(cap=10**9, pooled=False) for _ in range(3))
"""No admission control: fixed caps too large to bind."""


def _poisson(rate: float, seconds: float, priority: int = 1, deadline: float = 1e6,
             seed: int = 3) -> list[Offer]:
    rng, out, at = random.Random(seed), [], 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= seconds:
            return out
        out.append(Offer(at, priority, 1, 0, deadline))


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_one_worker_of_fixed_service_time_waits_as_m_d_1(rho: float) -> None:
    service_ms = 10.0
    pool = PoolModel(workers=1, max_batch=1, batch_ms=lambda n, t: service_ms * n, args=OPEN)  # type: ignore[arg-type]
    result = simulate(pool, _poisson(rho * 1000 / service_ms, 2_000), 2_000)
    waits = result.priorities["standard"].waits_ms
    expected = rho * service_ms / (2 * (1 - rho))  # Pollaczek-Khinchine, deterministic service
    assert sum(waits) / len(waits) == pytest.approx(expected, rel=0.1)
    assert result.priorities["standard"].rejected == 0


def test_a_light_load_never_waits_for_a_free_worker() -> None:
    pool = PoolModel(workers=2, max_batch=4, batch_ms=lambda n, t: 5.0, args=OPEN)  # type: ignore[arg-type]
    offers = [Offer(i * 0.1, 0, 1, 0, 10.0) for i in range(100)]  # one every 100 ms
    result = simulate(pool, offers, 10)
    assert result.priorities["interactive"].waits_ms == [0.0] * 100
    assert result.busy_s == pytest.approx(100 * 0.005)


def test_lower_priorities_get_their_share_when_all_are_backed_up() -> None:
    pool = PoolModel(workers=1, max_batch=10, batch_ms=lambda n, t: 100.0, args=OPEN,  # type: ignore[arg-type]
                     lower_share=0.2)
    offers = [Offer(0.0, p, 1, 0, 1e6) for p in range(3) for _ in range(3_000)]
    result = simulate(pool, offers, 10)
    # the first 100 batches (10 s): which priorities got the slots
    started = sorted((w, p) for p, r in result.priorities.items() for w in r.waits_ms)[:1000]
    share = {p: sum(1 for _, q in started if q == p) / 1000 for p in result.priorities}
    assert share["standard"] == pytest.approx(0.2, abs=0.03)
    assert share["batch"] == pytest.approx(0.2, abs=0.03)
    assert share["interactive"] == pytest.approx(0.6, abs=0.05)


def test_jobs_past_their_deadline_expire_unrun() -> None:
    pool = PoolModel(workers=1, max_batch=1, batch_ms=lambda n, t: 1_000.0, args=OPEN)  # type: ignore[arg-type]
    offers = [Offer(0.0, 0, 1, 0, 2.5) for _ in range(5)]
    r = simulate(pool, offers, 10).priorities["interactive"]
    assert (r.done, r.expired, r.good) == (3, 2, 2)  # starts at 0, 1, 2 s; done at 1, 2, 3 s


def test_admission_spills_to_the_provider_and_prices_its_tokens() -> None:
    config = load_config(None)
    pool = config.pools["echo"].model_copy(update={"max_batch": 4, "delay_ms": 100.0})
    profile = nominal_profile("echo", pool)
    spill_at = spill_ms(config, config.models["echo"], 1.0)  # the client's, from the deadline
    offers = [Offer(i / 200, 0, 10, 5, 1.0, spill_ms=spill_at) for i in range(2_000)]  # 200/s
    spill = simulate(pool_model(config, "echo", profile, 1, pool=pool, overflow=True,
                                provider_ms=300.0), offers, 10)
    capacity = 4 / 0.1  # 40 jobs/s
    r = spill.priorities["interactive"]
    assert r.spilled > 0 and r.admitted + r.spilled + r.rejected == r.offered == 2_000
    assert r.admitted == pytest.approx(capacity * 10, rel=0.25)
    assert spill.spill_tokens_in == 10 * r.spilled and spill.spill_tokens_out == 5 * r.spilled
    closed = simulate(pool_model(config, "echo", profile, 1, pool=pool), offers, 10)
    c = closed.priorities["interactive"]
    assert c.spilled == 0 and c.reasons.get("deadline_unmeetable", 0) > 0
    assert c.good < r.good  # what spilled was served by the provider in time


def test_admission_args_are_the_policies() -> None:
    config = load_config(None)
    pool = config.pools["echo"].model_copy(update={"cap_floor": 7})
    args = admission_args(config, "echo", pool)
    assert [a.cap for a in args] == [pool.caps.interactive, pool.caps.standard,
                                     pool.caps.batch]
    assert all(a.cap_floor == 7 and a.pooled for a in args)
    off = admission_args(config, "echo", pool.model_copy(update={"admission_control": False}))
    assert not any(a.pooled or a.wait_target_ms or a.age_gate_ms for a in off)


def test_bursts_keep_the_mean_and_offers_are_in_time_order() -> None:
    config = load_config(None)
    traffic = [Traffic(model="echo", priority="standard", rate=10.0,
                       burst=Burst(factor=3.0, seconds=20.0, every=60.0)),
               Traffic(model="echo", priority="batch", rate=5.0)]
    offers = offers_for(traffic, config, 600, seed=1, folder=Path())
    assert [o.at for o in offers] == sorted(o.at for o in offers)
    standard = [o for o in offers if o.priority == 1]
    assert len(standard) / 600 == pytest.approx(traffic[0].peak_rate(), rel=0.05)
    assert traffic[0].peak_rate() == pytest.approx(10 * (40 + 60) / 60)
    in_bursts = sum(1 for o in standard if o.at % 60 >= 40)
    assert in_bursts / len(standard) == pytest.approx(0.6, abs=0.05)
