"""Running a batch on the engine so that one bad job or one too-large batch fails alone.

Out of memory, the batch is split in halves and each half run the same way; a job that
does not fit even alone fails with ``out_of_memory``. Any other engine error splits it the
same way down to the one job that raises: that job is :class:`Crashed` (the worker
re-queues it, attempts + 1, and past the limit it is dead-lettered), so a poison request
never fails the jobs batched with it. A lost device (:class:`DeviceLost`) is nobody's
fault: it is not split, and reaches the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from switchyard.broker.schemas import ErrorInfo, ServedBy
from switchyard.workers.deltas import DeltaPublisher
from switchyard.workers.engines.base import Engine, EngineOutput
from switchyard.workers.errors import DeviceLost, OutOfMemory
from switchyard.workers.pricing import priced
from switchyard.workers.puller import Pulled

__all__ = ["Crashed", "Executor"]

log = logging.getLogger(__name__)


class Crashed(ErrorInfo):
    """The engine raised on this job alone: it is re-queued (attempts + 1), and past the
    attempt limit dead-lettered with this error."""


@dataclass
class Executor:
    engine: Engine
    served_by: ServedBy
    deltas: DeltaPublisher
    out_of_memory: Callable[[OutOfMemory], None]
    """Called on each out-of-memory error, before the batch is split."""
    ran: Callable[[], None]
    """Called for each engine call that returned."""
    per_hour: float = 0.0
    """The pool's ``cost_per_hour``: results get their share of the call's time (0: no
    cost is put on them)."""

    async def run(self, batch: Sequence[Pulled]) -> list[EngineOutput]:
        """One output per job of ``batch``, in order (see the module docstring)."""
        if not batch:
            return []
        envelopes = [p.envelope for p in batch if p.envelope is not None]
        started = time.perf_counter()
        try:
            outputs = await self.engine.run(envelopes, self.served_by,
                                            self.deltas.emitter(batch))
        except OutOfMemory as exc:
            self.out_of_memory(exc)
            if len(batch) == 1:
                return [ErrorInfo(code="out_of_memory",
                                  message=f"the request does not fit in memory alone: {exc}")]
            log.warning("batch of %d ran out of memory; running it in halves", len(batch))
            split = True
        except DeviceLost:
            raise  # no job is to blame: the worker hands them back and exits
        except Exception as exc:  # isolate the job that crashed it; the worker carries on
            log.exception("engine %s failed a batch of %d", self.engine.name, len(batch))
            if len(batch) == 1:
                return [Crashed(code="engine_error", message=f"{type(exc).__name__}: {exc}")]
            split = True
        else:
            split = False
        if split:  # outside the handler: the error (and what it holds) is gone by now
            return await self._halves(batch)
        self.ran()
        if self.per_hour:
            return priced(outputs, [p.cost_by(self.engine.cost)[1] for p in batch],
                          time.perf_counter() - started, self.per_hour)
        return outputs

    async def _halves(self, batch: Sequence[Pulled]) -> list[EngineOutput]:
        half = len(batch) // 2
        return [*await self.run(batch[:half]), *await self.run(batch[half:])]
