"""Script calls that more than one package makes, built in one place: the ARGV layout of
each (documented in its ``lua/*.lua`` header) is known here only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from switchyard.broker.config import JobsConfig
from switchyard.broker.keys import GROUP
from switchyard.broker.schemas import ErrorInfo, JobOutcome, JobState, now_ms
from switchyard.broker.scripts import ScriptCall

__all__ = ["EnqueueJob", "StreamPolicy", "TenantQuota", "cancel_call", "enqueue_call",
           "lapse_call", "settle_call"]

EnqueueJob = tuple[str, str | None, str, str, int, int]
"""(job hash key, idempotency key or None, job id, envelope JSON, tokens, deadline in ms
from admission, 0: none)."""


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """A tenant's quota on one partition (its share of the configured one), and its keys
    there: its jobs in flight in this stream and in the other two, its buckets, and the
    partition's tenants."""

    name: str
    keys: tuple[str, ...]
    weight: float = 1.0
    rps: float = 0.0
    bucket: float = 0.0
    tpm: float = 0.0
    max_concurrent: int = 0
    share_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """How ``enqueue`` admits onto one priority stream (see ``lua/enqueue.lua``); built once
    per stream (and tenant) and reused for every call."""

    stream: str
    drain: str
    cap: int
    job_ttl_ms: int
    wait_target_ms: int = 0
    cap_floor: int = 0
    shed_ms: int = 0
    pool_keys: tuple[str, ...] = ()
    """The partition's 3 priority streams and their 3 drain hashes (with admission
    control: the prediction, ``shed_ms`` and ``wait_target_ms`` read them)."""
    age_gate_ms: int = 0
    tenant: TenantQuota | None = None


def enqueue_call(policy: StreamPolicy, reply: str, jobs: Sequence[EnqueueJob], *,
                 idempotency_ttl_ms: int = 0, spill_ms: int = 0,
                 owner: str | None = None) -> ScriptCall:
    """One ``enqueue`` call for jobs of one stream (and tenant) sharing one reply stream.
    With ``idempotency_ttl_ms`` every job carries an idempotency key. ``owner``: the
    tenant that submitted them, written into each job's record."""
    p, t = policy, policy.tenant
    keys = [p.stream, p.drain]
    args: list[str | int | float] = [
        p.cap, p.job_ttl_ms, reply, idempotency_ttl_ms, spill_ms, p.wait_target_ms,
        p.cap_floor, p.shed_ms, p.age_gate_ms if p.wait_target_ms else 0,
        *((t.name, t.weight, t.rps, t.bucket, t.tpm, t.max_concurrent, t.share_at)
          if t is not None else ("", 0, 0, 0, 0, 0, 0)), owner or "",
        "1" if p.pool_keys else "0"]
    for job_key, idempotency_key, job_id, payload, tokens, deadline_ms in jobs:
        keys.append(job_key)
        if idempotency_ttl_ms:
            assert idempotency_key is not None
            keys.append(idempotency_key)
        args += [job_id, payload, tokens, deadline_ms]
    if p.shed_ms or p.wait_target_ms:
        assert len(p.pool_keys) == 6, "shed_ms and wait_target_ms need the pool's keys"
    keys += p.pool_keys
    if t is not None:
        keys += t.keys
    return ("enqueue", keys, args)


def settle_call(idempotency_key: str, job_id: str, *, fill_ttl_ms: int = 0,
                reserved: bool = True) -> ScriptCall:
    """Fill a reserved idempotency key with its admitted job (``fill_ttl_ms``), or drop
    it: a reservation (``reserved``) or a key whose job is gone (see ``lua/settle.lua``)."""
    return ("settle", [idempotency_key],
            ["fill" if fill_ttl_ms else "drop", job_id, fill_ttl_ms,
             "reserved" if reserved else "plain"])


def lapse_call(job_key: str, stream: str, reply: str, tenant_jobs: str, job_id: str,
               jobs: JobsConfig) -> ScriptCall:
    """At a job's start deadline: expire it unless a worker started it (``lua/lapse.lua``)."""
    return ("lapse", [job_key, stream, reply, tenant_jobs],
            [GROUP, job_id, int(jobs.result_ttl_s * 1000), int(jobs.reply_ttl_s * 1000),
             jobs.reply_maxlen])


def cancel_call(job_key: str, stream: str, reply: str, tenant_jobs: str, job_id: str,
                jobs: JobsConfig, why: str = "cancelled by the caller") -> ScriptCall:
    """End a job that has not ended yet as cancelled (see ``lua/cancel.lua``);
    ``tenant_jobs``: its tenant's jobs in flight."""
    outcome = JobOutcome(id=job_id, state=JobState.CANCELLED, finished_ms=now_ms(),
                         error=ErrorInfo(code="cancelled", message=why))
    return ("cancel", [job_key, stream, reply, tenant_jobs],
            [GROUP, outcome.model_dump_json(), int(jobs.result_ttl_s * 1000),
             int(jobs.reply_ttl_s * 1000), jobs.reply_maxlen, job_id])
