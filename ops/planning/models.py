"""From a config, a profile and a workload to what the simulator runs: the pool model
(its admission policy as ``dispatcher/policies.py`` builds it) and the offers."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from switchyard.broker.admission_model import AdmissionArgs
from switchyard.broker.config import PoolConfig, SwitchyardConfig
from switchyard.broker.schemas import PRIORITIES
from switchyard.ops.planning.profile import Profile
from switchyard.ops.planning.simulator import Offer, PoolModel
from switchyard.ops.planning.workload import Traffic

__all__ = ["admission_args", "offers_for", "pool_model"]


def admission_args(pool: PoolConfig) -> tuple[AdmissionArgs, AdmissionArgs, AdmissionArgs]:
    """Each priority's policy, as ``Policies._build`` gives it (spill is per job)."""
    if not pool.admission_control:
        return tuple(AdmissionArgs(getattr(pool.caps, p), pooled=False)  # type: ignore[return-value]
                     for p in PRIORITIES)
    return tuple(AdmissionArgs(  # type: ignore[return-value]
        cap=getattr(pool.caps, p), wait_target_ms=pool.wait_targets.ms(p),
        cap_floor=pool.cap_floor, shed_ms=pool.shed_after_s.ms(p),
        age_gate_ms=int(pool.age_gate_s * 1000)) for p in PRIORITIES)


def pool_model(pool: PoolConfig, profile: Profile, workers: int, *, overflow: bool = False,
               provider_ms: float = 500.0, provider_rpm: float = 0.0) -> PoolModel:
    """The pool with ``workers`` workers, each batch taking the profile's time for its
    size and its longest input."""
    return PoolModel(
        workers=workers, max_batch=pool.max_batch, batch_ms=profile.curve(pool.max_batch),
        args=admission_args(pool), deadline_share=pool.deadline_share,
        admission_control=pool.admission_control, lower_share=pool.lower_share,
        overflow=overflow, provider_ms=provider_ms, provider_rpm=provider_rpm,
        ttft_ms=profile.ttft_ms(pool.max_batch), window=pool.max_batch * pool.pack_window)


def offers_for(traffic: Sequence[Traffic], config: SwitchyardConfig, seconds: float,
               seed: int, folder: Path = Path()) -> list[Offer]:
    """The offers of these traffic entries over ``seconds`` (the busiest hour's rates),
    merged in time order."""
    rng = random.Random(seed)
    out = []
    for t in traffic:
        deadline = t.deadline_s or getattr(config.jobs.deadline_s, t.priority)
        priority = PRIORITIES.index(t.priority)
        out += [Offer(at, priority, n_in, n_out, deadline, t.retries, t.retry_after_s)
                for at, n_in, n_out in t.arrivals(seconds, rng, folder)]
    out.sort(key=lambda o: o.at)
    return out
