"""Script calls that more than one package makes, built in one place: the ARGV layout of
each (documented in its ``lua/*.lua`` header) is known here only."""

from __future__ import annotations

from collections.abc import Sequence

from broker.config import JobsConfig
from broker.keys import GROUP
from broker.schemas import ErrorInfo, JobOutcome, JobState, now_ms
from broker.scripts import ScriptCall

__all__ = ["cancel_call", "enqueue_call"]

EnqueueJob = tuple[str, str | None, str, str]
"""(job hash key, idempotency key or None, job id, envelope JSON)."""


def enqueue_call(stream: str, drain: str, reply: str, jobs: Sequence[EnqueueJob], *,
                 cap: int, job_ttl_ms: int, idempotency_ttl_ms: int = 0, spill_ms: int = 0,
                 wait_target_ms: int = 0, cap_floor: int = 0, shed_ms: int = 0,
                 pool_keys: Sequence[str] = ()) -> ScriptCall:
    """One ``enqueue`` call for jobs of one stream sharing one reply stream. With
    ``idempotency_ttl_ms`` every job carries an idempotency key; with ``shed_ms``,
    ``pool_keys`` are the partition's 3 priority streams and their 3 drain hashes."""
    keys = [stream, drain]
    args: list[str | int | float] = [cap, job_ttl_ms, reply, idempotency_ttl_ms, spill_ms,
                                     wait_target_ms, cap_floor, shed_ms]
    for job_key, idempotency_key, job_id, payload in jobs:
        keys.append(job_key)
        if idempotency_ttl_ms:
            assert idempotency_key is not None
            keys.append(idempotency_key)
        args += [job_id, payload]
    if shed_ms:
        keys += pool_keys
    return ("enqueue", keys, args)


def cancel_call(job_key: str, stream: str, reply: str, job_id: str, jobs: JobsConfig,
                why: str = "cancelled by the caller") -> ScriptCall:
    """End a job that has not ended yet as cancelled (see ``lua/cancel.lua``)."""
    outcome = JobOutcome(id=job_id, state=JobState.CANCELLED, finished_ms=now_ms(),
                         error=ErrorInfo(code="cancelled", message=why))
    return ("cancel", [job_key, stream, reply],
            [GROUP, outcome.model_dump_json(), int(jobs.result_ttl_s * 1000),
             int(jobs.reply_ttl_s * 1000), jobs.reply_maxlen, job_id])
