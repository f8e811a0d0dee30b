"""Admission replies, and an honest Retry-After from depth and measured drain rate."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Admitted",
    "Aged",
    "Duplicate",
    "Rejected",
    "Reserved",
    "Shed",
    "Spilled",
    "TenantRefused",
    "Verdict",
    "drain_rate",
    "parse_admission",
    "retry_after",
]

STALE_MS = 5_000
"""A stream that completed nothing for this long is treated as not draining."""


@dataclass(slots=True)
class Admitted:  # not frozen: built per job, and frozen dataclasses are slow to build
    job_id: str
    entry_id: str
    position: int
    """Entries ahead of this one in its stream when it was admitted."""
    drain_rate: float | None = None
    """The stream's measured drain rate then (jobs/s), when it was read."""
    deadline_ms: int | None = None
    """The job's deadline, set at admission on the Redis clock (epoch ms)."""
    start_ms: int | None = None
    """Its predicted start, ms from admission (the jobs ahead of it at its priority and
    above, over what the pool leaves this priority), when the pool's rates are known."""


@dataclass(frozen=True)
class Duplicate:
    job_id: str
    """The job already admitted under the same idempotency key."""


@dataclass(frozen=True)
class Reserved:
    """The idempotency key is held by a submission still being admitted on another pool
    (see ``broker/lua/reserve.lua``)."""

    job_id: str
    age_ms: int


@dataclass(frozen=True)
class Rejected:
    depth: int
    drain_rate: float
    cap: int | None = None
    """The cap in force (a sized cap differs from the configured one)."""


@dataclass(slots=True)
class Spilled:
    """The pool's predicted start would miss the job's deadline (its admission share of
    it): it was not admitted there, and goes to the route's overflow pool."""

    depth: int
    """Jobs ahead of it: queued at its priority and above."""
    drain_rate: float
    """What the pool drains of them (jobs/s)."""


@dataclass(slots=True)
class Shed:
    """The pool's whole backlog would take longer to drain than this priority allows."""

    backlog: int
    drain_rate: float


@dataclass(slots=True)
class Aged:
    """The stream's oldest waiting entry has been older than its wait target for a whole
    gate interval: the priority is refused until it is younger again."""

    depth: int
    drain_rate: float
    age_ms: int


@dataclass(slots=True)
class TenantRefused:
    """The job's tenant is over a quota: ``why`` is ``rps``, ``tpm``, ``concurrent`` or
    ``share`` (its weighted share of a contended stream)."""

    why: str
    retry_after: float | None
    """Seconds until the quota allows the job (None: not known)."""


Verdict = Admitted | Duplicate | Reserved | Rejected | Spilled | Shed | Aged | TenantRefused


def parse_admission(reply: object) -> Verdict:
    """Parse the enqueue script's reply (see ``broker/lua/enqueue.lua``)."""
    if not isinstance(reply, list) or not reply:
        raise TypeError(f"unexpected enqueue reply: {reply!r}")
    verdict = reply[0]
    if verdict == "admitted":
        rate = float(reply[4]) if len(reply) > 4 and reply[4] else None
        deadline = int(reply[5]) if len(reply) > 5 and reply[5] else None
        start = int(reply[6]) if len(reply) > 6 and reply[6] else None
        return Admitted(str(reply[1]), str(reply[2]), int(reply[3]), rate, deadline, start)
    if verdict == "duplicate":
        return Duplicate(str(reply[1]))
    if verdict == "reserved":
        return Reserved(str(reply[1]), int(reply[2]))
    if verdict == "rejected":
        rate = drain_rate(float(reply[2]), int(reply[3]), int(reply[4]), int(reply[5]))
        return Rejected(int(reply[1]), rate, int(reply[6]) if len(reply) > 6 else None)
    if verdict == "spill":
        return Spilled(int(reply[1]), float(reply[2]))
    if verdict == "shed":
        return Shed(int(reply[1]), float(reply[2]))
    if verdict == "aged":
        return Aged(int(reply[1]), float(reply[2]), int(reply[3]))
    if verdict == "tenant":
        return TenantRefused(str(reply[1]), float(reply[2]) if reply[2] else None)
    raise TypeError(f"unexpected enqueue verdict: {verdict!r}")


def drain_rate(last_rate: float, window_start_ms: int, window_count: int, now_ms: int) -> float:
    """Jobs/s a stream drains at: the last full one-second window, or the current one."""
    age = now_ms - window_start_ms
    if window_start_ms <= 0 or age > STALE_MS:
        return 0.0
    if last_rate > 0:
        return last_rate
    return window_count * 1000.0 / age if age >= 100 else 0.0


def retry_after(depth: int, cap: float, rate: float, idle_default: float) -> float:
    """Seconds until ``depth`` drains below ``cap`` (a cap, or whatever a check allows) at
    ``rate`` jobs/s; ``idle_default`` when nothing drains."""
    if rate <= 0:
        return idle_default
    return round(max(0.001, (depth - cap + 1) / rate), 3)
