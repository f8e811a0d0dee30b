"""The ``echo`` engine: no model. It returns its input after an optional delay.

It exists to measure the platform itself (queueing, admission, batching, replies,
streaming) without a model's cost in the way; ``switchyard bench queue`` uses it. With
``delay_ms`` a batch takes that long, and ``job_delay_ms`` more per job in it (a device
that is busy: ``switchyard bench batch`` runs it so). Embed
results carry empty vectors and the input texts under ``echo``; chat results are the
last message's text, streamed word by word when asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from switchyard.broker.schemas import (
    ChatRequest,
    ChatResult,
    EmbedResult,
    JobEnvelope,
    ServedBy,
    Usage,
)
from switchyard.workers.engines.base import Emit, EngineOutput

__all__ = ["EchoEngine"]


class EchoEngine:
    name = "echo"
    device = "none"
    token_bytes = 0
    joins = False
    tokenises = False

    def __init__(self, delay_ms: float = 0.0, job_delay_ms: float = 0.0) -> None:
        self._delay = delay_ms / 1000.0
        self._job_delay = job_delay_ms / 1000.0

    async def warmup(self) -> None:
        return None

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        request = job.request
        if isinstance(request, ChatRequest):
            return 1, 1
        return len(request.input), 1

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        if self._delay or self._job_delay:
            await asyncio.sleep(self._delay + self._job_delay * len(jobs))
        return [_chat(i, job.request, served_by, emit) if isinstance(job.request, ChatRequest)
                else EmbedResult.built(
                    kind="embed", vectors=[[] for _ in job.request.input], dimensions=0,
                    usage=Usage.built(
                        input_tokens=sum(len(t.split()) for t in job.request.input),
                        output_tokens=0),
                    echo=job.request.input, served_by=served_by, cost_usd=None)
                for i, job in enumerate(jobs)]


def _chat(index: int, request: ChatRequest, served_by: ServedBy, emit: Emit) -> ChatResult:
    words = request.messages[-1].content.split(" ")[:request.max_tokens]
    for n, word in enumerate(words):
        emit(index, word if n == 0 else " " + word)
    return ChatResult(
        text=" ".join(words),
        finish_reason="length" if len(words) == request.max_tokens else "stop",
        usage=Usage(input_tokens=sum(len(m.content.split()) for m in request.messages),
                    output_tokens=len(words)),
        ttft_ms=None, served_by=served_by,
    )
