"""Errors the enqueue API raises.

    SwitchyardError                      (broker.errors)
    └── ClientError
        ├── InvalidRequest               bad input, rejected before anything was enqueued
        │   └── UnknownModel             the model names no configured route
        ├── AdmissionRejected            the stream is full: retry after ``retry_after`` s
        ├── JobNotFound                  no record of the job (never existed, or expired)
        ├── ResultTimeout                ``result(timeout=...)`` ran out; the job goes on
        └── JobError                     the job ended without a result
            ├── JobFailed                an engine or decode error (``code``, ``message``)
            ├── JobCancelled
            └── JobExpired               its deadline passed before it ran

The enqueue API also raises two errors of the broker layer (``switchyard.broker.errors``):
``BrokerUnavailable`` (Redis did not answer within ``[redis] timeout_s`` or the job's
deadline) and ``DurabilityUnavailable`` (a ``durable=True`` enqueue the server cannot
confirm on disk).
"""

from __future__ import annotations

from switchyard.broker.errors import SwitchyardError

__all__ = [
    "AdmissionRejected",
    "ClientError",
    "InvalidRequest",
    "JobCancelled",
    "JobError",
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "ResultTimeout",
    "UnknownModel",
]


class ClientError(SwitchyardError):
    """Raised by the enqueue API."""


class InvalidRequest(ClientError, ValueError):
    """The request is malformed; nothing was enqueued."""


class UnknownModel(InvalidRequest):
    """The model is not configured."""


class AdmissionRejected(ClientError):
    """Nothing was enqueued. ``reason``: ``pool_full`` (the priority stream is at its
    cap), ``deadline_unmeetable`` (at the measured drain rate the job would wait past
    its deadline, and its route has no overflow pool), ``shed`` (the pool's whole
    backlog is past what this priority is admitted at: lower priorities go first; or the
    stream's oldest entry has waited past its target for too long) or ``tenant_quota``
    (the tenant is over a quota; ``detail`` says which: ``rps``, ``tpm``,
    ``concurrent``, or ``share``, its weighted share of a contended stream).

    ``retry_after`` is the time the stream needs to drain enough (below its cap, or to a
    wait the deadline allows) at the drain rate measured over the last second
    (``drain_rate``, jobs/s; 0 when none was seen lately).
    """

    def __init__(self, model: str, priority: str, depth: int, cap: int,
                 drain_rate: float, retry_after: float, reason: str = "pool_full",
                 detail: str = "") -> None:
        self.model = model
        self.priority = priority
        self.depth = depth
        self.cap = cap
        self.drain_rate = drain_rate
        self.retry_after = retry_after
        self.reason = reason
        self.detail = detail
        what = {"pool_full": f"queue is full ({depth}/{cap})",
                "shed": f"is shedding load ({depth} queued at {drain_rate:.1f}/s)",
                "tenant_quota": f"tenant is over its {detail} quota",
                }.get(reason, f"queue would not reach this job before its deadline ({depth} "
                              f"ahead at {drain_rate:.1f}/s)")
        super().__init__(f"{model}/{priority} {what}; retry after {retry_after:.3f}s")


class JobNotFound(ClientError):
    """The job has no record: it never existed, or its record's TTL ran out."""


class ResultTimeout(ClientError, TimeoutError):
    """No outcome within the wait; the job itself carries on."""


class JobError(ClientError):
    """The job ended without a result."""

    def __init__(self, job_id: str, code: str, message: str) -> None:
        self.job_id = job_id
        self.code = code
        self.message = message
        super().__init__(f"job {job_id} {code}: {message}")


class JobFailed(JobError):
    """An engine error, a malformed entry, or a request no worker can serve."""


class JobCancelled(JobError):
    """The job was cancelled."""


class JobExpired(JobError):
    """The job's deadline passed before a worker ran it."""
