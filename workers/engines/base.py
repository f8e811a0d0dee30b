"""The engine protocol: what a worker needs from whatever runs the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from switchyard.broker.schemas import ChatResult, EmbedResult, ErrorInfo, JobEnvelope, ServedBy
from switchyard.workers.errors import OutOfMemory

__all__ = ["Emit", "Engine", "EngineOutput", "HasRoom", "HoldsCache", "Released",
           "ReportsOutOfMemory"]

EngineOutput = EmbedResult | ChatResult | ErrorInfo
"""Per job: a result, or the reason that one job failed."""


class Released(ErrorInfo):
    """Not an outcome: the engine could not take this job (the serving engine it fronts
    is down). The worker hands it back to the queue, with no attempt spent."""

Emit = Callable[[int, str], bool]
"""``emit(i, text)``: a text delta of ``jobs[i]``, as it is produced. Safe to call from
any thread; a no-op for jobs that did not ask to stream. Returns False once the job has
ended elsewhere (cancelled: its caller went away): the engine should stop it at its next
step (its outcome is dropped anyway)."""


class Engine(Protocol):
    name: str
    device: str
    token_bytes: int
    """Device memory one padded token of a batch costs (0: not bounded by memory). The
    worker sizes batches by it; see ``workers/engines/costs.py``."""
    joins: bool
    """True if :meth:`run` may be called again while earlier calls run, their jobs
    joining the running batch (continuous batching): the worker then keeps pulling."""
    tokenises: bool
    """True if :meth:`cost` runs a tokenizer (long inputs take long): the worker then
    costs new entries in a thread, off its event loop."""

    async def warmup(self) -> None:
        """Load weights and run once, so the first real batch is not the slow one."""

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        """(sequences, tokens of the longest): the batch's padded-token bound uses it. For
        generation, tokens = prompt + max new tokens."""

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        """Run one batch; one output per job, in order, results carrying ``served_by``.
        Raising :class:`~workers.errors.OutOfMemory` makes the worker split the batch;
        raising anything else fails the whole batch."""


@runtime_checkable
class ReportsOutOfMemory(Protocol):
    """An engine that recovers from running out of memory itself (the ``generate``
    engine's decode loop puts rows back and resumes them) and tells the worker of each
    event, so its batch sizing learns from it. The worker sets the hook; it may be called
    from any thread."""

    out_of_memory: Callable[[OutOfMemory], None]


@runtime_checkable
class HoldsCache(Protocol):
    """An engine whose running batch keeps memory between steps (a KV cache) while more
    work joins it. The worker charges running rows ``cache_bytes`` per padded slot of the
    merged cache (rows x the widest row), and a new batch ``token_bytes`` per token of
    its own forward only; see ``workers/sizing.py``."""

    cache_bytes: int
    """Device memory one padded slot of the running cache holds (per row per column)."""

    def held_bytes(self) -> int:
        """What the running batch's cache holds now (may be read from any thread)."""


@runtime_checkable
class HasRoom(Protocol):
    """An engine that says how many more jobs it can take now (the ``served`` engine:
    read from the serving engine it fronts). The worker pulls no more than that, and
    waits about ``scrape_s`` for room when there is none."""

    scrape_s: float

    def room(self) -> int:
        """Jobs to send now (0: none, wait)."""

    def taken(self, jobs: Sequence[str]) -> None:
        """The worker took these jobs (by id) for the engine: they count as in flight
        until the engine is done with them, or ..."""

    def settled(self, jobs: Sequence[str]) -> None:
        """... the worker is (run, skipped by ``start``, or handed back)."""

    def vitals(self) -> dict[str, str]:
        """The engine's load, published with the heartbeat."""
