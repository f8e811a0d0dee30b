"""Streams generated text to callers while their jobs run.

An engine calls ``emit(i, text)`` from its decoding thread; the publisher gathers the
deltas and appends them, one pipeline per flush and one entry per job (a job's deltas
since the last flush joined), to each job's reply stream as entries
``{id: job id, t: text, n: its number}``, numbered from 0 per job so that a caller can
drop a delta which a retried pipeline wrote twice. The reply stream is the one the job's
outcome goes to, and the worker awaits :meth:`DeltaPublisher.drain` before completing a
batch, so a caller always reads every delta of a job before its outcome.

Flushes are at least ``interval_s`` apart (a job's first delta after a quiet spell goes at
once): a token per step would otherwise cost a Redis write and a caller wake-up per token,
which on a small model costs more than generating it.

A batch that runs again (split after running out of memory) replays its text: decoding
is deterministic per job (greedy, or seeded; the engine seeds unseeded jobs from their
id), so the publisher drops the characters of each job it already passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence

import redis.asyncio as aioredis

from switchyard.broker.retry import until_done
from switchyard.broker.schemas import ChatRequest
from switchyard.workers.engines.base import Emit
from switchyard.workers.puller import Pulled

__all__ = ["DeltaPublisher"]

log = logging.getLogger(__name__)


class DeltaPublisher:
    def __init__(self, redis: aioredis.Redis, maxlen: int, interval_s: float = 0.02) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._interval = interval_s
        self._last_flush = 0.0
        self._now = asyncio.Event()  # flush without waiting out the interval
        self._draining = 0
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, str]] = []
        self._emitted = 0
        self._numbers: dict[str, int] = {}
        self._chars: dict[str, int] = {}  # characters of each job passed on so far
        self._job_keys: dict[str, str] = {}  # of the jobs streaming, to see them cancelled
        self._stopped: set[str] = set()  # jobs found cancelled while they stream
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushing: asyncio.Task[None] | None = None
        self.published = 0

    @property
    def busy(self) -> bool:
        """Whether any job streams (or streamed) text not yet forgotten."""
        return bool(self._numbers or self._chars or self._pending)

    def emitter(self, run: Sequence[Pulled]) -> Emit:
        """The ``emit`` for one batch: deltas of jobs that asked to stream, by index."""
        self._loop = asyncio.get_running_loop()
        targets = {i: (p.entry.reply, p.entry.job_id) for i, p in enumerate(run)
                   if p.envelope is not None and isinstance(p.envelope.request, ChatRequest)
                   and p.envelope.request.stream and p.reply_owned}
        if not targets:
            return _ignore
        for i in targets:
            self._job_keys[run[i].entry.job_id] = run[i].keys.job(run[i].entry.job_id)
        produced = dict.fromkeys(targets, 0)  # characters this run has produced, per job

        def emit(index: int, text: str) -> bool:
            target = targets.get(index)
            if target is None or not text:
                return True
            if target[1] in self._stopped:
                return False
            with self._lock:
                start = produced[index]
                produced[index] = end = start + len(text)
                passed = self._chars.get(target[1], 0)
                if end <= passed:
                    return True  # a replay of text already sent
                self._chars[target[1]] = end
                first = not self._pending
                self._pending.append((*target, text[max(0, passed - start):]))
                self._emitted += 1
            if (first or start == 0) and self._loop is not None:  # start 0: a first token
                self._loop.call_soon_threadsafe(self._schedule, start == 0)
            return True

        return emit

    def _schedule(self, urgent: bool = False) -> None:
        if urgent:
            self._now.set()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while True:
            wait = self._last_flush + self._interval - asyncio.get_running_loop().time()
            if wait > 0 and not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), wait)
            self._last_flush = asyncio.get_running_loop().time()
            if not self._draining:
                self._now.clear()
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            await self._send(self._merge(batch))
            self.published += len(batch)

    def _merge(self, batch: list[tuple[str, str, str]]) -> list[tuple[str, str, str, int]]:
        """One entry per job, its pieces joined in order, numbered."""
        joined: dict[str, tuple[str, list[str]]] = {}
        for reply, job_id, text in batch:
            joined.setdefault(job_id, (reply, []))[1].append(text)
        entries = []
        for job_id, (reply, pieces) in joined.items():
            number = self._numbers.get(job_id, 0)
            self._numbers[job_id] = number + 1
            entries.append((reply, job_id, "".join(pieces), number))
        return entries

    def forget(self, job_ids: Sequence[str]) -> None:
        """Drop the numbering of finished jobs."""
        for job_id in job_ids:
            self._numbers.pop(job_id, None)
            self._chars.pop(job_id, None)
            self._job_keys.pop(job_id, None)
            self._stopped.discard(job_id)

    async def _send(self, batch: list[tuple[str, str, str, int]]) -> None:
        """Retried until it lands (the batch's outcome waits for it), in order. The same
        round trip reads each job's state: one cancelled meanwhile stops streaming, and
        its engine stops it at its next step (see ``Emit``)."""
        async def send() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for reply, job_id, text, number in batch:
                pipe.xadd(reply, {"id": job_id, "t": text, "n": number}, maxlen=self._maxlen,
                          approximate=True)
            watched = [job_id for _, job_id, _, _ in batch if job_id in self._job_keys]
            for job_id in watched:
                pipe.hget(self._job_keys[job_id], "state")
            states = (await pipe.execute())[len(batch):]
            for job_id, state in zip(watched, states, strict=True):
                if state in ("cancelled", b"cancelled"):
                    self._stopped.add(job_id)

        await until_done(send, f"streaming {len(batch)} deltas")

    async def drain(self) -> None:
        """Wait until every delta emitted before this call is in Redis (not those a
        batch running meanwhile goes on emitting)."""
        with self._lock:
            mark = self._emitted
        self._draining += 1
        self._now.set()
        try:
            while self.published < mark:
                if self._flushing is None or self._flushing.done():
                    self._schedule()
                assert self._flushing is not None
                await asyncio.shield(self._flushing)
        finally:
            self._draining -= 1


def _ignore(index: int, text: str) -> bool:
    """The emit of a batch in which no job streams."""
    return True
