"""Sizes batches to the memory budget, and learns from running out of it.

A batch may hold ``budget bytes / (engine.token_bytes x scale)`` padded tokens, where the
budget is read from the memory probe before every batch.

An engine that keeps a running batch (``HoldsCache``: generation's KV cache) is charged
for what its memory really does. Joined, every row is padded to the widest one, so the
running rows and a new batch cost ``cache_bytes`` x rows x the widest final length
(prompt + max tokens) of any of them; the activations (``token_bytes`` - ``cache_bytes``)
exist only during one forward, so they are charged once, on the largest forward (the new
batch's prefill, or a step of every row). The probe's free memory already has the running
cache taken out, so what that cache holds now (``held_bytes``) counts back into the
budget before the running rows are charged: counted once, not twice.

``scale`` is what running out of memory taught: it starts at 1, grows by a quarter per
out-of-memory *event* (one event fails every request of a running batch at once; it
counts once), never beyond ``MAX_SCALE``, and decays back towards 1 as batches run clean
(its excess over 1 shrinks by ``DECAY`` per batch: halved after about 35), so one bad
spell does not shrink batches for good.

A job that alone needs more than the whole budget (as measured when the worker started,
idle, at the engine's own estimate: the learned scale stays out of it) can never run
here: it fails at once with ``request_too_large``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from switchyard.broker.config import PoolConfig
from switchyard.broker.schemas import JobEnvelope, JobState
from switchyard.broker.units import format_size
from switchyard.workers.engines.base import Engine, HoldsCache
from switchyard.workers.ledger import Finish, failure
from switchyard.workers.memory import Budget, MemoryReading
from switchyard.workers.puller import Pulled

__all__ = ["IDLE", "BatchSizer", "Fits", "Running"]

log = logging.getLogger(__name__)

Fits = Callable[[int, int], bool]
"""``fits(sequences, longest)``: whether a new batch of that shape fits beside what runs."""


@dataclass(frozen=True)
class Running:
    """What a worker's running batches hold: rows, and the widest final length."""

    rows: int = 0
    widest: int = 0

    def plus(self, costs: Sequence[tuple[int, int]]) -> Running:
        return Running(self.rows + sum(n for n, _ in costs),
                       max([self.widest, *(t for _, t in costs)]))


IDLE = Running()

OOM_GROWTH = 1.25
MAX_SCALE = 4.0
DECAY = 0.98


class BatchSizer:
    def __init__(self, engine: Engine, budget: Budget, max_batch_tokens: int) -> None:
        self._engine = engine
        self._budget = budget
        self._max_tokens = max_batch_tokens
        self.scale = 1.0
        self.events = 0
        """Out-of-memory events learned from."""
        self._last_event = 0
        self.capacity = 0
        """Bytes a batch may use on an idle worker (read by :meth:`start`)."""
        self.last_budget = 0
        self._cache = engine.cache_bytes if isinstance(engine, HoldsCache) else 0

    @property
    def bounded(self) -> bool:
        return self._engine.token_bytes > 0

    def start(self) -> None:
        if self.bounded:
            self.capacity = self.last_budget = self._budget.bytes()
            log.info("batch memory budget %s (%s per padded token)",
                     format_size(self.capacity), format_size(self._engine.token_bytes))

    def token_limit(self, *, fresh: bool = True) -> int:
        """Padded tokens the next batch may hold on its own (nothing running); ``fresh``:
        read the budget now (else the last one read)."""
        if not self.bounded:
            return self._max_tokens
        if fresh:
            self.last_budget = self._read()
        return min(self._max_tokens, int(self.last_budget / self._per_token()))

    def fits(self, running: Running = IDLE) -> Fits:
        """The bound a new batch must keep beside ``running`` (the budget read now)."""
        most = self._max_tokens
        if not self.bounded:
            return lambda n, longest: n * longest <= most
        budget = self.last_budget = self._read()
        cache, scale = self._cache, self.scale
        forward = self._engine.token_bytes - cache  # only during a forward

        def fits(n: int, longest: int) -> bool:
            rows, width = running.rows + n, max(running.widest, longest)
            need = cache * rows * width + forward * max(n * longest, rows)
            return n * longest <= most and need * scale <= budget

        return fits

    def charged(self, running: Running) -> int:
        """Bytes the running rows are charged (their cache at its widest)."""
        return int(self._cache * running.rows * running.widest * self.scale)

    def _read(self) -> int:
        held = self._engine.held_bytes() if isinstance(self._engine, HoldsCache) else 0
        return self._budget.bytes(held)

    def too_large(self, tokens: int) -> str:
        """Why a job of ``tokens`` padded tokens can never run here ('' if it can)."""
        need = tokens * self._engine.token_bytes
        if not self.bounded or need <= self.capacity:
            return ""
        return (f"the request needs about {format_size(need)} of memory ({tokens} tokens), "
                f"more than this worker's whole batch budget of {format_size(self.capacity)}")

    def vitals(self) -> MemoryReading | None:
        """A fresh reading (and budget, in ``last_budget``); None when not memory-bound."""
        if not self.bounded:
            return None
        self.last_budget = self._read()
        return self._budget.last

    def refuse(self, batch: Sequence[Pulled],
               cost: Callable[[JobEnvelope], tuple[int, int]]) -> list[Finish]:
        """Failures for the jobs of ``batch`` that alone need more than the whole budget."""
        if not self.bounded:
            return []
        refused = []
        for pulled in batch:
            texts, tokens = pulled.cost_by(cost)
            why = self.too_large(texts * tokens)
            if why:
                refused.append(Finish(pulled, failure(
                    pulled.entry.job_id, JobState.FAILED, "request_too_large", why)))
        return refused

    def window(self, batch: Sequence[Pulled], limit: int, pool: PoolConfig) -> int:
        """Entries to read ahead per priority: about as many batches (``pack_window``) as
        ``limit`` padded tokens hold jobs the size of the largest in ``batch``."""
        per_job = max(p.cost_by(self._engine.cost)[1] for p in batch)
        fit = max(1, min(limit // max(1, per_job), pool.max_batch))
        return fit * pool.pack_window

    def out_of_memory(self, event: int) -> bool:
        """Learn from the out-of-memory event ``event`` (see ``OutOfMemory.event``); False
        if it was learned from already (another request of the same batch)."""
        if event <= self._last_event:
            return False
        self._last_event = event
        self.events += 1
        self.scale = min(MAX_SCALE, self.scale * OOM_GROWTH)
        log.warning("out of memory: cost estimate raised to %s per token (x%.2f)",
                    format_size(self._per_token()), self.scale)
        return True

    def ran_clean(self) -> None:
        """A batch ran without running out of memory: the learned scale decays."""
        if self.scale > 1.0:
            self.scale = 1.0 + (self.scale - 1.0) * DECAY

    def _per_token(self) -> float:
        return self._engine.token_bytes * self.scale
