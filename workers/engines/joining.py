"""Continuous batching for the ``generate`` engine: one decoding thread, one running
:class:`~.decoding.Batch`, and requests that join it between steps.

:meth:`DecodeLoop.submit` hands over a worker batch's prompts and returns a future of
their results. The thread admits everything submitted since its last step (a prefill of
the newcomers, merged into the running cache), then runs one step for every row; a
request's future resolves when its last row finishes. So a request that arrives while
others are generating starts at the next step instead of waiting for them to end.

Any error in a step (out of memory included: the cache is freed first) fails every
request in the batch at that moment, and the loop starts afresh with the next ones; the
worker splits and re-runs them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from switchyard.workers.engines.base import Emit
from switchyard.workers.engines.decoding import Batch, Decoded, Prompt, Row, make_rows

__all__ = ["DecodeLoop"]

Guard = Callable[[Callable[[], list[Row]]], list[Row]]
"""Runs one admit or step, turning an out-of-memory error into ``OutOfMemory``."""


class _Submission:
    def __init__(self, size: int) -> None:
        self.future: Future[list[Decoded]] = Future()
        self.results: list[Decoded | None] = [None] * size
        self.left = size

    def done(self, row: Row) -> None:
        self.results[row.index] = row.decoded
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result([r for r in self.results if r is not None])

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class DecodeLoop:
    def __init__(self, model: Any, tokenizer: Any, device: str, guard: Guard) -> None:
        import torch

        self._torch: Any = torch
        self._model, self._tokenizer, self._device = model, tokenizer, device
        self._guard = guard
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
            self._intake += rows
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

    def _run(self) -> None:
        batch = Batch(self._model, self._tokenizer, self._device)
        while True:
            with self._wake:
                while not self._intake and not batch.rows and not self._closed:
                    self._wake.wait()
                if self._closed and not self._intake and not batch.rows:
                    return
                newcomers, self._intake = self._intake, []
            if newcomers and batch.rows:
                self.joined += len({id(r.owner) for r in newcomers})
            try:
                finished = self._guard(partial(batch.admit, newcomers)) if newcomers else []
                if batch.rows:
                    finished += self._guard(batch.step)
                    self.steps += 1
            except BaseException as exc:
                for row in [*batch.rows, *newcomers]:
                    row.owner.fail(exc)
                batch = Batch(self._model, self._tokenizer, self._device)
                continue
            for row in finished:
                row.owner.done(row)
