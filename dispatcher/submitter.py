"""Coalesces concurrent enqueue calls of one client into pipelined round trips.

Every ``submit`` made while a round trip is in flight joins the next one, so a burst of
thousands of concurrent submissions costs a handful of round trips, while a lone
submission still goes out at once. Jobs bound for one stream share one ``enqueue`` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from broker.calls import enqueue_call
from broker.schemas import ChatRequest, EmbedRequest, Priority
from broker.scripts import ScriptCall, Scripts, grouped

__all__ = ["Enqueue", "Submission", "Submitter"]

MAX_PENDING = 4_000
PER_CALL = 500


@dataclass(slots=True)
class Enqueue:
    """One job for the ``enqueue`` script (see ``broker/lua/enqueue.lua``). Treat as
    read-only; not ``frozen``, because one is built per job and frozen ones build slowly."""

    stream: str
    drain: str
    cap: int
    job_ttl_ms: int
    job_key: str
    idempotency_key: str
    job_id: str
    payload: str
    reply: str
    idempotency_ttl_ms: int
    spill_ms: int = 0
    """Not admitted ('spill') when the stream's predicted wait exceeds this (0: never)."""
    wait_target_ms: int = 0
    """Size the cap to what drains in this time (0: ``cap`` is fixed) ..."""
    cap_floor: int = 0
    """... but at least this."""
    shed_ms: int = 0
    """Refuse ('shed') when the partition's whole backlog takes longer to drain (0: never);
    ``pool_keys`` are then its 3 priority streams and their 3 drain hashes."""
    pool_keys: tuple[str, ...] = ()


@dataclass(slots=True)
class Submission:
    """One job as the caller asked for it, before it is placed on a pool."""

    model: str
    request: EmbedRequest | ChatRequest
    priority: Priority
    deadline_s: float | None
    idempotency_key: str | None
    tenant: str | None


_Pending = tuple[Enqueue, "asyncio.Future[object]"]


class Submitter:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._queue: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, job: Enqueue) -> object:
        """The script's reply for this job."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.append((job, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_PENDING]
            del self._queue[:MAX_PENDING]
            await self._send(batch)

    async def _send(self, batch: Sequence[_Pending]) -> None:
        groups = grouped(batch, _group_key, PER_CALL)
        try:
            replies = await self._scripts.pipeline([_call(g) for g in groups])
        except Exception as exc:  # every caller gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for group, reply in zip(groups, replies, strict=True):
            assert isinstance(reply, list)
            for (_, future), one in zip(group, reply, strict=True):
                if not future.done():
                    future.set_result(one)

    async def aclose(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _group_key(pending: _Pending) -> str:
    """Jobs share a call when they share a stream, a reply stream, idempotency TTL and
    spill threshold."""
    job = pending[0]
    return f"{job.stream}\n{job.reply}\n{job.idempotency_ttl_ms}\n{job.spill_ms}\n{job.shed_ms}"


def _call(group: Sequence[_Pending]) -> ScriptCall:
    first = group[0][0]
    return enqueue_call(
        first.stream, first.drain, first.reply,
        [(job.job_key, job.idempotency_key, job.job_id, job.payload) for job, _ in group],
        cap=first.cap, job_ttl_ms=first.job_ttl_ms,
        idempotency_ttl_ms=first.idempotency_ttl_ms, spill_ms=first.spill_ms,
        wait_target_ms=first.wait_target_ms, cap_floor=first.cap_floor,
        shed_ms=first.shed_ms, pool_keys=first.pool_keys)
