"""A handle on one admitted job: its state, its result, cancelling it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from switchyard.broker.calls import cancel_call, lapse_call
from switchyard.broker.jobs import JobRecord, read_job
from switchyard.broker.schemas import (
    TERMINAL_STATES,
    ChatResult,
    EmbedResult,
    ErrorInfo,
    JobOutcome,
    JobState,
    now_ms,
)
from switchyard.dispatcher.errors import (
    JobCancelled,
    JobError,
    JobExpired,
    JobFailed,
    JobNotFound,
    ResultTimeout,
)

if TYPE_CHECKING:
    from switchyard.dispatcher.client import AsyncClient
    from switchyard.dispatcher.replies import Deltas

__all__ = ["AnyResult", "AsyncJob", "outcome_result"]

_ENDED = frozenset(s.value for s in TERMINAL_STATES)
AnyResult = EmbedResult | ChatResult
R = TypeVar("R", bound=AnyResult)
R_co = TypeVar("R_co", bound=AnyResult, covariant=True)

_ERRORS: dict[JobState, type[JobError]] = {
    JobState.FAILED: JobFailed,
    JobState.CANCELLED: JobCancelled,
    JobState.EXPIRED: JobExpired,
}


def outcome_result(outcome: JobOutcome) -> AnyResult:
    """The result of a finished job, or its typed error raised."""
    if outcome.state is JobState.SUCCEEDED and outcome.result is not None:
        return outcome.result
    error = outcome.error or ErrorInfo(code=outcome.state.value, message="no result")
    raise _ERRORS.get(outcome.state, JobFailed)(outcome.id, error.code, error.message)


class AsyncJob(Generic[R_co]):
    """Returned by :meth:`AsyncClient.embed` (``AsyncJob[EmbedResult]``),
    :meth:`AsyncClient.chat` (``AsyncJob[ChatResult]``) and :meth:`AsyncClient.job`.

    ``async for delta in job`` (or :meth:`stream`) yields a chat job's text as it is
    generated; the deltas joined are the final result's text."""

    __slots__ = ("_client", "_deltas", "_kind", "_lapse_at", "_tenant", "_waiter",
                 "deadline_ms", "estimated_start_s", "id", "position")

    def __init__(
        self,
        client: AsyncClient,
        job_id: str,
        kind: type[R_co] | tuple[type[EmbedResult], type[ChatResult]],
        *,
        position: int | None = None,
        estimated_start_s: float | None = None,
        waiter: asyncio.Future[str] | None = None,
        deltas: Deltas | None = None,
        deadline_ms: int | None = None,
        tenant: str | None = None,
        deadline_s: float | None = None,
    ) -> None:
        self._client = client
        self._tenant = tenant
        self._lapse_at = None if deadline_s is None else time.monotonic() + deadline_s
        """When to ask Redis to expire the job if it has not started (monotonic s): its
        start deadline, counted from admission; None once it started, or if unknown."""
        """Only this tenant's job is found (None: any, a trusted caller)."""
        self._kind: type | tuple[type, ...] = kind
        self._waiter = waiter
        self._deltas = deltas
        self.id = job_id
        self.position = position
        """Entries ahead of this job in its stream when it was admitted (None if unknown)."""
        self.estimated_start_s = estimated_start_s
        """Seconds until a worker is expected to take it: ``position`` / the stream's
        measured drain rate (None when no rate was measured with work ahead)."""
        self.deadline_ms = deadline_ms
        """The job's start deadline (epoch ms, set by Redis at admission), when this
        handle admitted it."""

    def __repr__(self) -> str:
        return f"<AsyncJob {self.id}>"

    async def status(self) -> JobState:
        return (await self._record()).state

    async def record(self) -> JobRecord:
        """The job's record (of the copy that carries it, if it was spilled): its state,
        and its outcome once it has one. Raises ``JobNotFound`` as the other calls do."""
        return await self._record()

    async def outcome(self, timeout: float | None = None) -> JobOutcome:
        """Wait for the job to end; its outcome, success or not.

        A job not started by its start deadline is not waited for: at the deadline this
        asks Redis to expire it unless a worker has started it (atomically, on the Redis
        clock), so the answer comes even with no watchdog running. One that started runs
        to its end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._waiter is None and self._lapse_at is None:
            await self._lapse_from_record()
        while True:
            until = deadline
            if self._lapse_at is not None and (until is None or self._lapse_at < until):
                until = self._lapse_at
            left = None if until is None else max(0.0, until - time.monotonic())
            try:
                if self._waiter is not None and not self._waiter.cancelled():
                    return await self._await_reply(self._waiter, left)
                return await self._poll(until, left)
            except ResultTimeout:
                if until == deadline:
                    raise ResultTimeout(f"job {self.id} did not end within {timeout}s") from None
            ended = await self._lapse()
            if ended is not None:
                return ended

    async def _lapse_from_record(self) -> None:
        """A handle that did not admit the job learns its start deadline from its record."""
        record = await self._record()
        if record.state is JobState.QUEUED and record.deadline_ms is not None:
            self._lapse_at = time.monotonic() + max(0.0, (record.deadline_ms - now_ms()) / 1000)

    async def _lapse(self) -> JobOutcome | None:
        """At the start deadline: the job's outcome if Redis expired it (or it had ended),
        else None (it started, or the deadline is not there yet by Redis's clock)."""
        client = self._client
        job_id, record = await self._current()
        if record.outcome is not None:
            return record.outcome
        if record.state is not JobState.QUEUED or record.stream is None or record.reply is None:
            self._lapse_at = None  # it started: it runs to its end
            return None
        keys = client.keys.of_job(job_id)
        reply = await client.bounded(client.scripts.call(*lapse_call(
            keys.job(job_id), record.stream, record.reply,
            keys.tenant_jobs(record.tenant or "-", keys.priority_of(record.stream)), job_id,
            client.config.jobs)))
        assert isinstance(reply, list) and reply
        if reply[0] == "lapsed":
            return JobOutcome.model_validate_json(str(reply[1]))
        if reply[0] in _ENDED:  # it ended meanwhile
            return (await self._current())[1].outcome
        if reply[0] == "early":  # the clocks differ: ask again when Redis's says it is due
            self._lapse_at = time.monotonic() + int(reply[1]) / 1000
            return None
        self._lapse_at = None
        return None

    async def result(self, timeout: float | None = None) -> R_co:
        """The job's result, or its typed error (:class:`JobError`) raised."""
        result = outcome_result(await self.outcome(timeout))
        if not isinstance(result, self._kind):
            raise JobFailed(self.id, "wrong_kind", f"job {self.id} is a {result.kind} job")
        return cast(R_co, result)

    def __aiter__(self) -> AsyncIterator[str]:
        return self.stream()

    async def stream(self, timeout: float | None = None) -> AsyncIterator[str]:
        """A chat job's text deltas as they are generated, then whatever of the final text
        they did not carry (all of it for a job not submitted with ``stream=True`` by this
        client). Raises the job's typed error if it fails; ``timeout`` bounds the wait for
        the whole job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = ""
        while self._deltas is not None:
            until = deadline
            if not sent and self._lapse_at is not None and (until is None
                                                            or self._lapse_at < until):
                until = self._lapse_at  # no text yet: it may never have started
            left = None if until is None else max(0.0, until - time.monotonic())
            try:
                text = await asyncio.wait_for(anext(self._deltas), left)
            except StopAsyncIteration:
                break
            except TimeoutError:
                if until == deadline:
                    raise ResultTimeout(f"job {self.id} did not end within {timeout}s") from None
                ended = await self._lapse()
                if ended is not None:
                    outcome_result(ended)  # raises its error (JobExpired)
                continue
            sent += text
            yield text
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        result = outcome_result(await self.outcome(left))
        if not isinstance(result, ChatResult):
            raise JobFailed(self.id, "wrong_kind", f"job {self.id} is not a chat job")
        if result.text.startswith(sent) and len(result.text) > len(sent):
            yield result.text[len(sent):]

    async def _await_reply(
        self, waiter: asyncio.Future[str], timeout: float | None
    ) -> JobOutcome:
        # The client's reply reader resolves the future (and re-reads the job record of
        # anything waiting long), so one await is all a job costs here. A caller that
        # cancels this await cancels the future; later calls then read the record instead.
        # A timeout must not cancel it, hence the shield.
        if waiter.done() or timeout is None:
            return JobOutcome.model_validate_json(await waiter)
        try:
            async with asyncio.timeout(timeout):
                raw = await asyncio.shield(waiter)
        except TimeoutError:
            raise ResultTimeout(f"job {self.id} did not end within {timeout}s") from None
        return JobOutcome.model_validate_json(raw)

    async def _poll(self, deadline: float | None, timeout: float | None) -> JobOutcome:
        poll = 0.02
        while True:
            record = await self._record()
            if record.outcome is not None:
                return record.outcome
            wait = poll if deadline is None else min(poll, deadline - time.monotonic())
            if wait <= 0:
                raise ResultTimeout(f"job {self.id} still {record.state.value} after {timeout}s")
            await asyncio.sleep(wait)
            poll = min(poll * 2, 0.5)

    async def _record(self) -> JobRecord:
        return (await self._current())[1]

    async def _current(self) -> tuple[str, JobRecord]:
        """(id, record) of the job that carries this one: itself, or the copy it was
        forwarded to when it spilled to a provider pool."""
        client = self._client
        job_id = self.id
        for hop in range(4):  # a copy is never spilled again; the bound is only a guard
            record = await client.bounded(
                read_job(client.redis, client.keys.of_job(job_id), job_id))
            # The job's own record names its owner; a copy is reached only through it.
            if record is None or (hop == 0 and self._tenant is not None
                                  and record.owner != self._tenant):
                raise JobNotFound(f"no record of job {job_id} (never existed, or expired)")
            if record.forward is None:
                return job_id, record
            job_id = record.forward
        raise JobNotFound(f"job {self.id} was forwarded too many times")

    async def cancel(self) -> bool:
        """Cancel the job unless it already ended. True if this call cancelled it."""
        client = self._client
        job_id, record = await self._current()
        if record.ended or record.stream is None or record.reply is None:
            return False
        partition = client.keys.of_job(job_id)
        name, keys, args = cancel_call(partition.job(job_id), record.stream, record.reply,
                                       partition.tenant_jobs(record.tenant or "-",
                                                             partition.priority_of(record.stream)),
                                       job_id,
                                       client.config.jobs)
        return await client.bounded(client.scripts.call(name, keys, args)) == "cancelled"
