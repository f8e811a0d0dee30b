"""Admission verdicts that refuse a job, mapped to :class:`AdmissionRejected` in one place,
each with an honest ``retry_after``: the time its check needs to pass again."""

from __future__ import annotations

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import Priority
from switchyard.dispatcher.admission import (
    Aged,
    Rejected,
    Shed,
    Spilled,
    TenantRefused,
    retry_after,
)
from switchyard.dispatcher.errors import AdmissionRejected

__all__ = ["Refusal", "rejection"]

Refusal = Rejected | Spilled | Shed | Aged | TenantRefused


def rejection(config: SwitchyardConfig, model: str, pool_name: str, priority: Priority,
              verdict: Refusal, deadline_s: float | None) -> AdmissionRejected:
    pool = config.pools[pool_name]
    cap = getattr(pool.caps, priority)
    idle = config.jobs.idle_retry_after_s
    if isinstance(verdict, TenantRefused):
        return AdmissionRejected(model, priority, 0, cap, 0.0, verdict.retry_after or idle,
                                 "tenant_quota", verdict.why)
    rate = verdict.drain_rate
    # Each waits until what is queued has drained to what its check allows.
    if isinstance(verdict, Aged):  # what drains within the wait target
        allowed = rate * pool.wait_targets.ms(priority) / 1000
        wait = retry_after(verdict.depth, allowed, rate, idle)
        return AdmissionRejected(model, priority, verdict.depth, cap, rate, wait, "shed",
                                 f"oldest waited {verdict.age_ms} ms")
    if isinstance(verdict, Shed):  # the backlog the threshold allows
        allowed = int(rate * pool.shed_after_s.ms(priority) / 1000)
        wait = retry_after(verdict.backlog, allowed, rate, idle)
        return AdmissionRejected(model, priority, verdict.backlog, cap, rate, wait, "shed")
    if isinstance(verdict, Spilled):  # what is ahead fits the deadline's share
        allowed = int(rate * (deadline_s or 0) * pool.deadline_share)
        wait = retry_after(verdict.depth, allowed, rate, idle)
        return AdmissionRejected(model, priority, verdict.depth, cap, rate, wait,
                                 "deadline_unmeetable")
    cap = verdict.cap if verdict.cap is not None else cap
    return AdmissionRejected(model, priority, verdict.depth, cap, rate,
                             retry_after(verdict.depth, cap, rate, idle))
