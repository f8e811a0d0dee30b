"""What the scripts count in a priority stream's drain hash (``PartitionKeys.drain``),
read into typed objects for `switchyard exporter`, `switchyard top` and the capacity
planner.

``enqueue.lua`` counts each call's verdicts (``c:<verdict>``, ``c:tenant:<reason>``),
the jobs offered per minute and their tokens (a ring of 60 minutes: ``m<i>``, ``a<i>``,
``t<i>``) and the cap in force (``cap``); ``complete.lua`` the jobs drained (``done``)
and the measured drain rate (``rate`` over the window that began at ``ws``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from switchyard.broker.admission_model import Drain

__all__ = ["MINUTES", "TENANT_REASONS", "VERDICTS", "Minute", "StreamCounters", "read_counters"]

MINUTES = 60
"""Minutes of arrivals the ring keeps."""
VERDICTS = ("admitted", "rejected", "spill", "shed", "aged", "tenant", "duplicate",
            "reserved")
"""Admission verdicts, as ``enqueue.lua`` answers them."""
TENANT_REASONS = ("rps", "tpm", "concurrent", "share")
"""Why a ``tenant`` verdict refused a job."""


@dataclass(frozen=True)
class Minute:
    """Jobs offered to one stream in one minute (epoch minutes), and their tokens."""

    minute: int
    jobs: int
    tokens: int


@dataclass(frozen=True)
class StreamCounters:
    """One priority stream's counters (all zero for a stream never used)."""

    verdicts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(verdict, reason) -> jobs so answered; reason is '' except for 'tenant'. Every
    verdict and tenant reason is present (0 when never answered)."""
    drained: int = 0
    duplicates: int = 0
    """Results dropped: their job had one already."""
    drain_rate: float = 0.0
    """Jobs/s the stream drained over its last window; 0 when idle for 5 s."""
    cap: int | None = None
    """The cap admission last applied (None: no call yet)."""
    minutes: tuple[Minute, ...] = ()
    """Arrivals per minute, oldest first, within the last hour."""

    def jobs_in(self, minute: int) -> Minute:
        """The arrivals of one minute (epoch minutes; none: zero)."""
        return next((m for m in self.minutes if m.minute == minute), Minute(minute, 0, 0))

    @classmethod
    def parse(cls, raw: dict[str, str], now_ms: int) -> StreamCounters:
        verdicts: dict[tuple[str, str], int] = {
            (v, r): 0 for v in VERDICTS for r in (TENANT_REASONS if v == "tenant" else ("",))}
        for name, value in raw.items():
            if name.startswith("c:"):
                verdict, _, reason = name[2:].partition(":")
                verdicts[verdict, reason] = int(value)
        return cls(verdicts, int(raw.get("done", 0)), int(raw.get("dup", 0)),
                   _rate(raw, now_ms), int(raw["cap"]) if "cap" in raw else None,
                   _minutes(raw, now_ms // 60_000))


def _rate(raw: dict[str, str], now_ms: int) -> float:
    """As ``enqueue.lua`` reads it (the admission model's :meth:`Drain.rate_at`)."""
    return Drain(rate=float(raw["rate"]) if "rate" in raw else None,
                 ws=int(raw["ws"]) if "ws" in raw else None,
                 n=int(raw.get("n", 0))).rate_at(now_ms)


def _minutes(raw: dict[str, str], now_minute: int) -> tuple[Minute, ...]:
    out = []
    for i in range(MINUTES):
        minute = int(raw.get(f"m{i}", -1))
        if now_minute - MINUTES < minute <= now_minute:
            out.append(Minute(minute, int(raw.get(f"a{i}", 0)), int(raw.get(f"t{i}", 0))))
    return tuple(sorted(out, key=lambda m: m.minute))


async def read_counters(redis: aioredis.Redis, drain_keys: list[str],
                        now_ms: int) -> list[StreamCounters]:
    """The counters of several streams' drain hashes (one HGETALL each, pipelined: on a
    cluster each goes to its own node)."""
    pipe = redis.pipeline(transaction=False)
    for key in drain_keys:
        pipe.hgetall(key)
    replies = await pipe.execute()
    return [StreamCounters.parse({str(k): str(v) for k, v in r.items()}, now_ms)
            for r in replies]
