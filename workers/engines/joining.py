"""Continuous batching for the ``generate`` engine: one decoding thread, one running
:class:`~.decoding.Batch`, and requests that join it between steps.

:meth:`DecodeLoop.submit` hands over a worker batch's prompts and returns a future of
their results. The thread admits everything submitted since its last step (a prefill of
the newcomers, merged into the running cache), then runs one step for every row; a
request's future resolves when its last row finishes. So a request that arrives while
others are generating starts at the next step instead of waiting for them to end.

Running out of memory in a step drops the batch and its cache (the allocator's cache is
emptied before anything runs again; the error carries no traceback that would keep them
alive), and its rows wait to resume where they stopped, prefilled from their prompt and
the tokens they already generated, half as many at a time: the text a caller already has
stays the start of the text it gets. Out of memory while prefilling newcomers, they wait
the same way and the running rows go on. A row that runs out of memory alone (nothing
else in the batch) fails its request with :class:`OutOfMemory`: it does not fit (what
the request's other rows got to is kept by job, so when the worker runs them again, in
smaller batches, each resumes where it stopped or is done at once). Any
other error in a step fails every request in the batch, and the worker splits and re-runs
them to find the one that raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from switchyard.workers.engines.base import Emit
from switchyard.workers.engines.decoding import Batch, Decoded, Prompt, Row, make_rows
from switchyard.workers.errors import OutOfMemory

__all__ = ["DecodeLoop"]

log = logging.getLogger(__name__)

KEPT_MOST = 1024
"""Unfinished rows whose progress is kept for their job's next run, at most."""

Guard = Callable[[Callable[[], list[Row]]], list[Row]]
"""Runs one admit or step, turning an out-of-memory error into ``OutOfMemory``."""


class _Submission:
    def __init__(self, size: int) -> None:
        self.future: Future[list[Decoded]] = Future()
        self.results: list[Decoded | None] = [None] * size
        self.left = size
        self.rows: list[Row] = []

    def done(self, row: Row) -> None:
        self.results[row.index] = row.decoded
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result([r for r in self.results if r is not None])

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class DecodeLoop:
    def __init__(self, model: Any, tokenizer: Any, device: str, guard: Guard,
                 release: Callable[[], None] = lambda: None,
                 on_oom: Callable[[OutOfMemory], None] = lambda exc: None) -> None:
        import torch

        self._torch: Any = torch
        self._model, self._tokenizer, self._device = model, tokenizer, device
        self._guard = guard
        self._release = release
        """Frees device memory after a failed batch was dropped."""
        self._on_oom = on_oom
        """Called (in the decoding thread) for every out-of-memory error."""
        self._waiting: list[Row] = []  # taken in, not yet prefilled (this thread's own)
        self._cap = 0  # rows the batch may hold while put-back rows wait (0: no cap)
        self._batch: Batch | None = None
        self._kept: dict[str, Decoded | tuple[list[int], Any, int | None]] = {}
        """Progress of unfinished rows whose request failed, by prompt key (bounded)."""
        self._intake: list[Row] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.joined = 0
        """Requests admitted while others were mid-generation."""

    def submit(self, prompts: Sequence[Prompt], emit: Emit | None) -> Future[list[Decoded]]:
        submission = _Submission(len(prompts))
        rows = make_rows(self._torch, self._tokenizer, prompts, self._device, emit, submission)
        with self._wake:
            if self._closed:
                raise RuntimeError("the decode loop is closed")
            submission.rows = rows
            fresh = [row for row in rows if not self._resume(row, emit)]
            self._intake += fresh
            self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="switchyard-decode",
                                                daemon=True)
                self._thread.start()
        return submission.future

    def close(self) -> None:
        """Finish what was submitted, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def slots(self) -> int:
        """Padded cache slots the running batch holds now (read from any thread)."""
        batch = self._batch
        return 0 if batch is None else batch.slots

    def _run(self) -> None:
        batch = self._batch = Batch(self._model, self._tokenizer, self._device)
        while True:
            self._batch = batch
            with self._wake:
                while (not self._intake and not self._waiting and not batch.rows
                       and not self._closed):
                    self._wake.wait()
                if self._closed and not self._intake and not self._waiting and not batch.rows:
                    return
                self._waiting += self._intake
                self._intake = []
            finished: list[Row] = []
            newcomers = self._admissible(len(batch.rows))
            if newcomers and batch.rows:
                self.joined += len({id(r.owner) for r in newcomers})
            if newcomers:
                self._admit(batch, newcomers, finished)
            if batch.rows:
                try:
                    finished += self._guard(batch.step)
                    self.steps += 1
                except OutOfMemory as exc:
                    batch = self._step_oom(batch, exc)
                    continue
                except BaseException as exc:  # every row of the batch fails with it
                    _fail(batch.rows, exc)
                    del exc
                    batch = self._fresh(batch)
                    continue
            for row in finished:
                row.owner.done(row)

    def _admissible(self, running: int) -> list[Row]:
        """The waiting rows to prefill now: all of them, or while rows put back after an
        out-of-memory error wait, only as many as the cap leaves room for (those first)."""
        if not any(r.retries for r in self._waiting):
            self._cap = 0
        room = len(self._waiting) if not self._cap else max(0, self._cap - running)
        taken, self._waiting = self._waiting[:room], self._waiting[room:]
        return taken

    def _admit(self, batch: Batch, newcomers: list[Row], finished: list[Row]) -> None:
        """Prefill ``newcomers`` into ``batch``. Out of memory, they wait again (the
        running rows keep going: ``admit`` changes the batch only once it succeeded)."""
        try:
            finished += self._guard(partial(batch.admit, newcomers))
        except OutOfMemory as exc:
            self._put_back(newcomers, len(batch.rows), exc, batch)
        except BaseException as exc:
            _fail(newcomers, exc)
            del exc
            self._release()

    def _step_oom(self, batch: Batch, exc: OutOfMemory) -> Batch:
        """A step ran out of memory: the batch is dropped and its rows wait to resume,
        half as many at a time."""
        rows = batch.rows
        fresh = self._fresh(batch)
        self._put_back(rows, 0, exc, fresh)
        return fresh

    def _put_back(self, rows: list[Row], running: int, exc: OutOfMemory, batch: Batch) -> None:
        """``rows`` ran out of memory beside ``running`` others. Alone (nothing else in the
        batch, one row), the row's request fails: it does not fit. Otherwise they wait,
        first in line, and the batch is capped at ``running`` + half of them (at least
        one) until they are all back in."""
        self._on_oom(exc)
        if running == 0 and len(rows) == 1:
            owner = rows[0].owner
            batch.remove(lambda r: r.owner is owner)
            self._waiting = [r for r in self._waiting if r.owner is not owner]
            self._keep(owner)
            _fail(rows, exc)
            self._release()
            return
        for row in rows:
            row.retries += 1
        self._cap = max(1, running + len(rows) // 2)
        self._waiting = [*rows, *self._waiting]
        self._release()

    def _resume(self, row: Row, emit: Emit | None) -> bool:
        """Give ``row`` what was kept of its prompt's earlier row (under the lock); True
        if that row had finished (this one is then done already)."""
        kept = self._kept.pop(row.prompt.key, None) if row.prompt.key else None
        if kept is None:
            return False
        if isinstance(kept, Decoded):
            row.decoded = kept
            text = kept.text
        else:
            text = row.resume(*kept)
        if text and emit is not None:
            emit(row.index, text)  # from the start: the publisher drops what it sent
        if isinstance(kept, Decoded):
            row.owner.done(row)
            return True
        return False

    def _keep(self, owner: _Submission) -> None:
        """Keep what the rows of a failing request got to: finished rows' results,
        unfinished rows' progress. The worker runs their jobs again, and each resumes
        there instead of generating other text than its caller already has."""
        with self._wake:
            for row in owner.rows:
                done = getattr(row, "decoded", None)
                if not row.prompt.key or (done is None and not row.tail.ids):
                    continue
                self._kept[row.prompt.key] = done if done is not None else (
                    list(row.tail.ids), row.generator, row.first_ms)
            while len(self._kept) > KEPT_MOST:
                self._kept.pop(next(iter(self._kept)))

    def _fresh(self, failed: Batch) -> Batch:
        """A new, empty batch; the failed one's cache freed first."""
        failed.clear()
        del failed
        self._release()
        return Batch(self._model, self._tokenizer, self._device)


def _fail(rows: Sequence[Row], exc: BaseException) -> None:
    """Fail the requests of ``rows`` with ``exc``, its traceback logged here and dropped:
    its frames hold the batch (and its KV cache), which must be freed before a retry."""
    if not isinstance(exc, OutOfMemory):
        log.error("decoding failed for %d rows", len(rows), exc_info=exc)
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None
    for owner in {id(r.owner): r.owner for r in rows}.values():
        owner.fail(exc)
