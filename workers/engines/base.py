"""The engine protocol: what a worker needs from whatever runs the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from broker.schemas import EmbedResult, ErrorInfo, JobEnvelope, ServedBy

__all__ = ["Engine", "EngineOutput"]

EngineOutput = EmbedResult | ErrorInfo
"""Per job: a result, or the reason that one job failed."""


class Engine(Protocol):
    name: str
    device: str

    async def warmup(self) -> None:
        """Load weights and run once, so the first real batch is not the slow one."""

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        """(texts, longest text in tokens, estimated): the batch's padded-token bound uses it."""

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy) -> list[EngineOutput]:
        """Run one batch; one output per job, in order, results carrying ``served_by``.
        Raising fails the whole batch."""
