"""What provider calls cost: each bridged result's ``cost_usd`` (from the route's price
table) added up per provider and per tenant (the name the job is counted under:
unconfigured names are ``default``, see ``SwitchyardConfig.tracked_tenant``), in Redis
(``keys.spend``, shared by every worker; `switchyard status` shows it) and in the
worker's Prometheus counter."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import redis.asyncio as aioredis

from switchyard.broker.keys import Keys
from switchyard.broker.schemas import ChatResult, EmbedResult
from switchyard.workers.engines.base import EngineOutput
from switchyard.workers.metrics import WorkerMetrics
from switchyard.workers.puller import Pulled

__all__ = ["record_spend"]


async def record_spend(redis: aioredis.Redis, keys: Keys, metrics: WorkerMetrics,
                       run: Sequence[Pulled], outputs: Sequence[EngineOutput]) -> None:
    totals: dict[str, float] = defaultdict(float)
    for pulled, output in zip(run, outputs, strict=True):
        if not isinstance(output, ChatResult | EmbedResult) or not output.cost_usd:
            continue
        provider = output.served_by.provider if output.served_by else None
        tenant = pulled.envelope.tenant if pulled.envelope else None
        totals[f"provider:{provider or '-'}"] += output.cost_usd
        totals[f"tenant:{tenant or '-'}"] += output.cost_usd
        metrics.spend(provider or "-", tenant or "-", output.cost_usd)
    if totals:
        pipe = redis.pipeline(transaction=False)
        for field, usd in totals.items():
            pipe.hincrbyfloat(keys.spend, field, usd)
        await pipe.execute()
