"""From a config, a profile and a workload to what the simulator runs: the pool model
(its admission policy built by the client's own ``dispatcher/policies.py``) and the
offers (each with the spill threshold ``dispatcher/lanes.py`` gives its deadline)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from switchyard.broker.admission_model import AdmissionArgs
from switchyard.broker.config import PoolConfig, SwitchyardConfig
from switchyard.broker.keys import Keys
from switchyard.broker.schemas import PRIORITIES
from switchyard.dispatcher.lanes import spill_ms
from switchyard.dispatcher.policies import Policies
from switchyard.ops.planning.profile import Profile
from switchyard.ops.planning.simulator import Offer, PoolModel
from switchyard.ops.planning.workload import Traffic

__all__ = ["admission_args", "offers_for", "pool_model"]


def admission_args(config: SwitchyardConfig, name: str, pool: PoolConfig | None = None
                   ) -> tuple[AdmissionArgs, AdmissionArgs, AdmissionArgs]:
    """Each priority's policy on pool ``name`` (as ``pool`` where given), built by the
    client's own :class:`Policies` (spill is per job: :attr:`Offer.spill_ms`)."""
    if pool is not None:
        config = config.model_copy(update={"pools": {**config.pools, name: pool}})
    policies, keys = Policies(config), Keys(config.redis.prefix).partition(name, 0)
    first, second, third = (AdmissionArgs.of(policies.get(name, keys, p, None))
                            for p in PRIORITIES)
    return first, second, third


def pool_model(config: SwitchyardConfig, name: str, profile: Profile, workers: int, *,
               pool: PoolConfig | None = None, overflow: bool = False,
               provider_ms: float = 500.0, provider_rpm: float = 0.0) -> PoolModel:
    """Pool ``name`` (as ``pool`` where given) with ``workers`` workers, each batch taking
    the profile's time for its size and its longest input."""
    pool = pool or config.pools[name]
    return PoolModel(
        workers=workers, max_batch=pool.max_batch, batch_ms=profile.curve(pool.max_batch),
        args=admission_args(config, name, pool), lower_share=pool.lower_share,
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
        spill = spill_ms(config, config.models[t.model], deadline)
        out += [Offer(at, priority, n_in, n_out, deadline, t.retries, t.retry_after_s, spill)
                for at, n_in, n_out in t.arrivals(seconds, rng, folder)]
    out.sort(key=lambda o: o.at)
    return out
