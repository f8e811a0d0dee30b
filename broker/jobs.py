"""Job records: the hash that holds a job's state and, once it ended, its outcome."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from switchyard.broker.keys import PartitionKeys
from switchyard.broker.schemas import TERMINAL_STATES, JobOutcome, JobState

__all__ = ["JobRecord", "read_job"]


@dataclass(frozen=True)
class JobRecord:
    state: JobState
    outcome: JobOutcome | None
    stream: str | None
    reply: str | None
    worker: str | None
    forward: str | None = None
    """Set when the job was spilled to a provider pool: the id of the job that now
    carries it (its state here reads ``queued``; the copy's record tells the rest)."""
    tenant: str | None = None
    """The tenant the job is counted under (only where tenants are configured)."""
    owner: str | None = None
    """The tenant that submitted it (None: none was named)."""
    deadline_ms: int | None = None
    """Its start deadline (epoch ms, Redis clock), when it has one."""

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES


async def read_job(redis: aioredis.Redis, keys: PartitionKeys, job_id: str) -> JobRecord | None:
    """The job's record, or None once it expired (or never existed)."""
    state, outcome, stream, reply, worker, forward, tenant, owner, deadline = await redis.hmget(
        keys.job(job_id), ["state", "outcome", "stream", "reply", "worker", "forward", "tenant",
                           "owner", "deadline"])
    if state is None:
        return None
    return JobRecord(
        state=JobState.QUEUED if state == "forwarded" else JobState(str(state)),
        forward=None if forward is None else str(forward),
        outcome=JobOutcome.model_validate_json(outcome) if outcome else None,
        stream=None if stream is None else str(stream),
        reply=None if reply is None else str(reply),
        worker=None if worker is None else str(worker),
        tenant=None if tenant is None else str(tenant),
        owner=None if owner is None else str(owner),
        deadline_ms=None if deadline is None else int(deadline),
    )
