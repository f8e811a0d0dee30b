"""Coalesces concurrent enqueue calls of one client into pipelined round trips.

Every ``submit`` made while round trips are in flight joins the next one, so a burst of
thousands of concurrent submissions costs a handful of round trips, while a lone
submission still goes out at once, sent by its caller's own coroutine (no task, no hop
through the loop's queue: the light-load path). Up to ``IN_FLIGHT`` round trips run at once: under
load a submission waits for one of them, not for a whole queue of them, which keeps the
answer to a rejected call fast. Jobs bound for one stream share one ``enqueue`` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from switchyard.broker.calls import StreamPolicy, enqueue_call
from switchyard.broker.errors import BrokerUnavailable, DurabilityUnavailable
from switchyard.broker.schemas import ChatRequest, EmbedRequest, Priority
from switchyard.broker.scripts import ScriptCall, Scripts, grouped

__all__ = ["Enqueue", "Submission", "Submitter", "enqueue_call_for", "group_key"]

MAX_PENDING = 4_000
PER_CALL = 500
IN_FLIGHT = 2
"""Round trips a client has in flight at once."""
MAX_QUEUED = 100_000
"""Submissions waiting for a round trip, at most: past it Redis is not keeping up, and
``submit`` fails at once rather than queue without bound."""


@dataclass(slots=True)
class Enqueue:
    """One job for the ``enqueue`` script (see ``broker/lua/enqueue.lua``). Treat as
    read-only; not ``frozen``, because one is built per job and frozen ones build slowly."""

    policy: StreamPolicy
    reply: str
    job_key: str
    idempotency_key: str | None
    job_id: str
    payload: str
    idempotency_ttl_ms: int
    spill_ms: int = 0
    """Not admitted ('spill') when the stream's predicted wait exceeds this (0: never)."""
    tokens: int = 0
    deadline_ms: int = 0
    owner: str | None = None
    """The tenant that submitted it (recorded in the job hash)."""
    fsync: bool = False
    """Durable: sent in a round trip of its own that ends with WAITAOF (Redis 7.2+)."""
    group: str = ""
    """Its :func:`group_key`, when the caller has it at hand ('': made here)."""


@dataclass(slots=True)
class Submission:
    """One job as the caller asked for it, before it is placed on a pool."""

    model: str
    request: EmbedRequest | ChatRequest
    priority: Priority
    deadline_s: float | None
    idempotency_key: str | None
    tenant: str | None
    durable: bool = False
    trace: str | None = None
    """A W3C ``traceparent`` the job's envelope carries (see ``JobEnvelope.trace``)."""


_Pending = tuple[Enqueue, "asyncio.Future[object]"]


class Submitter:
    def __init__(self, scripts: Scripts, waitaof_ms: int) -> None:
        self._scripts = scripts
        self._waitaof_ms = waitaof_ms
        self._queue: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._inline = 0
        """Round trips callers are sending themselves (see :meth:`submit`)."""
        self._draining = 0
        """Drain tasks not yet finished."""

    async def submit(self, job: Enqueue) -> object:
        """The script's reply for this job."""
        if len(self._queue) >= MAX_QUEUED:
            raise BrokerUnavailable(f"{len(self._queue)} submissions already wait for Redis")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if not self._queue and not self._inline and not self._draining:
            # Nothing in flight: send it from here. Submissions made meanwhile queue, and
            # drains start for them when it is back (or at once, up to IN_FLIGHT).
            self._inline += 1
            try:
                await self._send([(job, future)])
            finally:
                self._inline -= 1
                if self._queue:
                    self._start_drains()
            return future.result()
        self._queue.append((job, future))
        self._start_drains()
        return await future

    def _start_drains(self) -> None:
        while self._queue and self._draining + self._inline < IN_FLIGHT:
            self._draining += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if len(self._queue) <= MAX_PENDING:  # one drain takes them all
                break

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:MAX_PENDING]
                del self._queue[:MAX_PENDING]
                await self._send(batch)
        finally:
            self._draining -= 1

    async def _send(self, batch: Sequence[_Pending]) -> None:
        """Durable jobs go in a round trip of their own, so the fsync wait does not hold
        the others up."""
        fsynced = [p for p in batch if p[0].fsync]
        if not fsynced:  # the usual case: no task to spawn
            await self._send_some(batch, False)
            return
        plain = [p for p in batch if not p[0].fsync]
        await asyncio.gather(self._send_some(plain, False), self._send_some(fsynced, True))

    async def _send_some(self, batch: Sequence[_Pending], fsync: bool) -> None:
        if not batch:
            return
        groups = grouped(batch, _group_key, PER_CALL)
        try:
            replies, failure = await self._scripts.pipeline_fsynced(
                [_call(g) for g in groups], self._waitaof_ms if fsync else None,
                raise_errors=False)
        except Exception as exc:  # the round trip failed: every caller gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for group, reply in zip(groups, replies, strict=True):
            # One call's error (a bad entry, say) is its own callers', no one else's.
            if isinstance(reply, Exception) or not isinstance(reply, list):
                error = reply if isinstance(reply, Exception) else TypeError(
                    f"unexpected enqueue reply: {reply!r}")
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (job, future), one in zip(group, reply, strict=True):
                if future.done():
                    continue
                if failure is None:
                    future.set_result(one)
                else:
                    future.set_exception(DurabilityUnavailable(
                        f"{failure}: the job may have been admitted (retry with the same "
                        f"idempotency key to find out)", job.job_id))

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _group_key(pending: _Pending) -> str:
    job = pending[0]
    return job.group or group_key(job.policy, job.reply, job.idempotency_ttl_ms, job.spill_ms,
                                  job.owner)


def group_key(policy: StreamPolicy, reply: str, idempotency_ttl_ms: int, spill_ms: int,
              owner: str | None) -> str:
    """Jobs share a call when they share a stream policy, a reply stream, idempotency TTL,
    spill threshold and owner."""
    return f"{id(policy)}\n{reply}\n{idempotency_ttl_ms}\n{spill_ms}\n{owner}"


def _call(group: Sequence[_Pending]) -> ScriptCall:
    return enqueue_call_for([job for job, _ in group])


def enqueue_call_for(jobs: Sequence[Enqueue]) -> ScriptCall:
    """The ``enqueue`` call for jobs that share a call (see :func:`_group_key`)."""
    first = jobs[0]
    return enqueue_call(
        first.policy, first.reply,
        [(job.job_key, job.idempotency_key, job.job_id, job.payload, job.tokens,
          job.deadline_ms) for job in jobs],
        idempotency_ttl_ms=first.idempotency_ttl_ms, spill_ms=first.spill_ms, owner=first.owner)
