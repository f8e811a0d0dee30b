"""The cyclic garbage collector's settings for Switchyard's own long-running processes
(workers and bridges, the watchdog, the gateway): never set by a process that merely uses
the enqueue API, whose collector belongs to its program.

CPython collects its youngest generation every 700 net allocations of container objects,
and every object still alive then is promoted; a full collection runs once the objects
promoted since the last one reach a quarter of those that survived it, and walks every
live container: every module's, a loaded model's, and every buffered job's. A worker
keeps hundreds of jobs read ahead, and each lives across a few round trips, so nearly all
of them are promoted and walked again and again: in ``switchyard bench queue``'s gather,
10 full collections of 15-18 ms each per 60,000 jobs and 0.36 s of collection in all, a
seventh of the echo worker's CPU (docs/architecture.md, issue 15).

:func:`settle`, once the process has started (imports done, the model loaded and warmed
up), collects, then freezes what is left (:func:`gc.freeze`: those objects are never
walked again), and collects the youngest generation every ``young`` allocations instead
of 700: most of a job's objects are freed by reference counting before a collection runs,
so few are promoted. Reference counting frees everything that is not part of a cycle at
once, as before; cyclic garbage waits for the next young collection (at most ``young``
objects' worth of allocations).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG", "settle"]

YOUNG = 50_000
"""Allocations between young collections in a settled process (CPython's default: 700)."""


def settle(young: int = YOUNG) -> None:
    """Collect, freeze the survivors, and collect the youngest generation every ``young``
    allocations (the older generations' thresholds are left as they are)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)
