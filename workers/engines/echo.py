"""The ``echo`` engine: no model. It returns its input after an optional delay.

It exists to measure the platform itself (queueing, admission, batching, replies) without
a model's cost in the way; ``switchyard bench queue`` uses it. Its embed results carry
empty vectors and the input texts under ``echo``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from broker.schemas import EmbedResult, JobEnvelope, ServedBy, Usage
from workers.engines.base import EngineOutput

__all__ = ["EchoEngine"]


class EchoEngine:
    name = "echo"
    device = "none"

    def __init__(self, delay_ms: float = 0.0) -> None:
        self._delay = delay_ms / 1000.0

    async def warmup(self) -> None:
        return None

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        return len(job.request.input), 1

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy) -> list[EngineOutput]:
        if self._delay:
            await asyncio.sleep(self._delay)
        return [
            EmbedResult.model_construct(
                kind="embed", vectors=[[] for _ in job.request.input], dimensions=0,
                usage=Usage.model_construct(
                    input_tokens=sum(len(t.split()) for t in job.request.input),
                    output_tokens=0),
                echo=job.request.input, served_by=served_by,
            )
            for job in jobs
        ]
