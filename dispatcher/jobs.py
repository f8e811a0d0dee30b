"""A handle on one admitted job: its state, its result, cancelling it."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from broker.jobs import JobRecord, read_job
from broker.keys import GROUP
from broker.schemas import EmbedResult, ErrorInfo, JobOutcome, JobState, now_ms
from dispatcher.errors import (
    JobCancelled,
    JobError,
    JobExpired,
    JobFailed,
    JobNotFound,
    ResultTimeout,
)

if TYPE_CHECKING:
    from dispatcher.client import AsyncClient

__all__ = ["AsyncJob", "outcome_result"]

_ERRORS: dict[JobState, type[JobError]] = {
    JobState.FAILED: JobFailed,
    JobState.CANCELLED: JobCancelled,
    JobState.EXPIRED: JobExpired,
}


def outcome_result(outcome: JobOutcome) -> EmbedResult:
    """The result of a finished job, or its typed error raised."""
    if outcome.state is JobState.SUCCEEDED and outcome.result is not None:
        return outcome.result
    error = outcome.error or ErrorInfo(code=outcome.state.value, message="no result")
    raise _ERRORS.get(outcome.state, JobFailed)(outcome.id, error.code, error.message)


class AsyncJob:
    """Returned by :meth:`AsyncClient.embed` and :meth:`AsyncClient.job`."""

    __slots__ = ("_client", "_waiter", "id", "position")

    def __init__(
        self,
        client: AsyncClient,
        job_id: str,
        *,
        position: int | None = None,
        waiter: asyncio.Future[str] | None = None,
    ) -> None:
        self._client = client
        self._waiter = waiter
        self.id = job_id
        self.position = position
        """Entries ahead of this job in its stream when it was admitted (None if unknown)."""

    def __repr__(self) -> str:
        return f"<AsyncJob {self.id}>"

    async def status(self) -> JobState:
        return (await self._record()).state

    async def outcome(self, timeout: float | None = None) -> JobOutcome:
        """Wait for the job to end; its outcome, success or not."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._waiter is not None and not self._waiter.cancelled():
            return await self._await_reply(self._waiter, timeout)
        return await self._poll(deadline, timeout)

    async def result(self, timeout: float | None = None) -> EmbedResult:
        """The job's result, or its typed error (:class:`JobError`) raised."""
        return outcome_result(await self.outcome(timeout))

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
        client = self._client
        record = await read_job(client.redis, client.keys.of_job(self.id), self.id)
        if record is None:
            raise JobNotFound(f"no record of job {self.id} (never existed, or expired)")
        return record

    async def cancel(self) -> bool:
        """Cancel the job unless it already ended. True if this call cancelled it."""
        client = self._client
        keys = client.keys.of_job(self.id)
        record = await self._record()
        if record.ended or record.stream is None or record.reply is None:
            return False
        outcome = JobOutcome(
            id=self.id,
            state=JobState.CANCELLED,
            error=ErrorInfo(code="cancelled", message="cancelled by the caller"),
            finished_ms=now_ms(),
        )
        jobs = client.config.jobs
        verdict = await client.scripts.call(
            "cancel",
            [keys.job(self.id), record.stream, record.reply],
            [GROUP, outcome.model_dump_json(), int(jobs.result_ttl_s * 1000),
             int(jobs.reply_ttl_s * 1000), jobs.reply_maxlen, self.id],
        )
        return verdict == "cancelled"
