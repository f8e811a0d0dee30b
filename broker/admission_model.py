"""A pure Python model of ``lua/enqueue.lua``'s admission decision, for the capacity
planner's simulator (issue 21): the same arithmetic on the same state gives the same
verdict per job. ``tests/broker/test_admission_model.py`` holds the two together with a
property test against the real script on a real redis-server.

Modelled: fixed and sized caps (wait targets, the cap floor), the predicted start and
its spill, shedding on the partition's backlog, the age gate, and the drain and
admission windows they read. Not modelled (the planner has no use for them): idempotency
keys and reservations, and tenant quotas (a call without a tenant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from switchyard.broker.calls import StreamPolicy

__all__ = ["AdmissionArgs", "Drain", "Stream", "admit", "admitted_window", "drained_window"]

IDLE_MS = 5000
"""A window older than this: nothing drained (or admitted) lately."""


class Drain(NamedTuple):
    """A stream's drain hash, as the script reads it (None: the field is absent). A
    tuple: the simulator builds one per arrival, and tuples build fast."""

    rate: float | None = None
    ws: int | None = None
    n: int = 0
    arate: float | None = None
    aws: int | None = None
    an: int = 0
    above: int | None = None
    seen: int | None = None

    def rate_at(self, now: int) -> float:
        """Jobs/s drained: the last full window, else the current one (from 100 ms)."""
        age = now - (self.ws or 0)
        if age > IDLE_MS:
            return 0.0
        if self.rate is not None:
            return self.rate
        return self.n * 1000 / age if age >= 100 else 0.0

    def admitted_rate_at(self, now: int) -> float:
        """Jobs/s admitted lately (the admission window)."""
        age = now - (self.aws or 0)
        if age > IDLE_MS:
            return 0.0
        r = self.arate or 0.0
        return max(r, self.an * 1000 / age) if age >= 100 else r


class Stream(NamedTuple):
    """One priority stream of the partition: its depth (entries not yet acknowledged),
    the id time of its oldest entry not yet delivered to the workers (None: none), and
    its drain hash."""

    depth: int
    head_ms: int | None = None
    drain: Drain = Drain()


@dataclass(frozen=True)
class AdmissionArgs:
    """The stream's policy, as ``enqueue_call`` passes it (times in ms, 0: off)."""

    cap: int
    spill_ms: int = 0
    wait_target_ms: int = 0
    cap_floor: int = 0
    shed_ms: int = 0
    age_gate_ms: int = 0
    pooled: bool = True
    """Whether the partition's three streams are read (always, with admission control)."""

    @classmethod
    def of(cls, policy: StreamPolicy, spill_ms: int = 0) -> AdmissionArgs:
        """The arguments a call with this policy passes the script (the age gate only
        with a wait target, as ``enqueue_call`` sends it; its tenant is not modelled)."""
        return cls(policy.cap, spill_ms, policy.wait_target_ms, policy.cap_floor,
                   policy.shed_ms, policy.age_gate_ms if policy.wait_target_ms else 0,
                   bool(policy.pool_keys))


def admit(streams: tuple[Stream, Stream, Stream], mine: int, args: AdmissionArgs, jobs: int,
          now: int) -> tuple[list[str], Drain]:
    """The verdict for each of ``jobs`` jobs offered in one call to stream ``mine``
    (0: the highest priority) at ``now`` (Redis's clock), and the stream's drain hash
    after the call's age-gate bookkeeping."""
    own = streams[mine]
    rates = [s.drain.rate_at(now) for s in streams]
    depth, rate, cap, total = own.depth, rates[mine], args.cap, rates[0] + rates[1] + rates[2]
    if args.wait_target_ms > 0:
        rate = max(rate, total - sum(rates[:mine]))
        cap = min(cap, max(args.cap_floor, math.floor(rate * args.wait_target_ms / 1000)))
    ahead, avail, known = depth, rate, rate > 0
    if args.pooled and args.spill_ms > 0:
        taken = sum(max(rates[i], streams[i].drain.admitted_rate_at(now)) for i in range(mine))
        ahead += sum(s.depth for s in streams[:mine])
        avail, known = total - taken, total > 0
        if ahead < total:  # under a second of the pool's drain ahead: it keeps up
            avail = total
        elif rate > 0 and depth >= rate:  # backed up: a second of its own drain queued
            avail = min(rate, avail)
    refused = False
    if args.shed_ms > 0:
        backlog = sum(s.depth for s in streams)
        refused = total > 0 and backlog * 1000 / total > args.shed_ms
    drain, aged = own.drain, False
    if not refused and args.age_gate_ms > 0 and args.wait_target_ms > 0:
        aged, drain = _age_gate(own, args, now)
    verdicts = []
    for _ in range(jobs):
        late = args.spill_ms > 0 and ahead > 0 and known and (
            avail <= 0 or ahead * 1000 / avail > args.spill_ms)
        if refused:
            verdicts.append("shed")
        elif late:
            verdicts.append("spill")
        elif aged:
            verdicts.append("aged")
        elif depth >= cap:
            verdicts.append("rejected")
        else:
            verdicts.append("admitted")
            depth, ahead = depth + 1, ahead + 1
    return verdicts, drain


def _age_gate(own: Stream, args: AdmissionArgs, now: int) -> tuple[bool, Drain]:
    """Whether the gate is shut (the oldest undelivered entry has been past the wait
    target for ``age_gate_ms``), and the drain hash with the stretch recorded."""
    age = now - own.head_ms if own.depth > 0 and own.head_ms is not None else 0
    if age <= args.wait_target_ms:
        return False, own.drain if own.drain.above is None else own.drain._replace(above=None)
    since = now - (age - args.wait_target_ms)
    above = own.drain.above
    if above is not None and now - (own.drain.seen or 0) <= args.age_gate_ms:  # (Lua: 0 is true)
        since = min(above, since)
    return now - since >= args.age_gate_ms, own.drain._replace(above=since, seen=now)


def admitted_window(drain: Drain, admitted: int, now: int) -> Drain:
    """The admission window after ``admitted`` jobs were admitted at ``now``
    (``enqueue.lua``: a 500 ms window, restarted after 5 s idle)."""
    if drain.aws is None or now - drain.aws > IDLE_MS:
        return drain._replace(aws=now, an=admitted, arate=None)
    if now - drain.aws >= 500:
        return drain._replace(arate=round((drain.an + admitted) * 1000 / (now - drain.aws), 3),
                              aws=now, an=0)
    return drain._replace(an=drain.an + admitted) if admitted else drain


def drained_window(drain: Drain, count: int, now: int) -> Drain:
    """The drain window after ``count`` jobs completed at ``now`` (``complete.lua``: a
    one-second window, restarted after 5 s idle)."""
    rate, ws, n, arate, aws, an, above, seen = drain  # (built whole: _replace is slow)
    if ws is None or now - ws > IDLE_MS:
        return Drain(None, now, count, arate, aws, an, above, seen)
    if now - ws >= 1000:
        return Drain(round((n + count) * 1000 / (now - ws), 3), now, 0, arate, aws, an, above,
                     seen)
    return Drain(rate, ws, n + count, arate, aws, an, above, seen)
