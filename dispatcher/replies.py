"""One reader task per client instance multiplexes every job that client waits on.

The client owns one reply stream per partition it has submitted to (a reply stream must
share its partition's hash tag, since the completing script appends to it). The reader
blocks on all of them in one XREAD, hands each outcome to the job waiting for it, and
every few hundred entries trims what it has read, in the same round trip as its next
read. On a Redis Cluster, where one command reads one slot, each reply stream has a
reader task of its own, blocking on the node that holds it.

Every few seconds it also re-reads the records of jobs that have waited longer than that,
so a reply lost with a Redis restart never leaves a caller waiting forever.

Entries with a ``t`` field are text deltas of a streaming chat job (see
``workers/deltas.py``); they go to that job's :class:`Deltas`, which ends when the job's
outcome arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from switchyard.broker.errors import REDIS_FAILURES
from switchyard.broker.nodes import at_node, command, refresh_topology
from switchyard.broker.retry import Backoff
from switchyard.broker.settings import is_cluster
from switchyard.broker.streams import parse_stream_reply
from switchyard.broker.wire import Wire
from switchyard.dispatcher.errors import JobNotFound

__all__ = ["Deltas", "ReplyRouter"]

log = logging.getLogger(__name__)

RECHECK_S = 5.0
TRIM_EVERY = 256
"""Entries read between trims of the reply streams (a light client trims rarely, and
never pays a second command per read)."""
SWEEP_MAX = 1_000
_CLOSING_FAILURES: tuple[type[Exception], ...] = (TimeoutError, *REDIS_FAILURES)


class Deltas:
    """One streaming job's text deltas in order (a delta written twice is dropped); the
    iteration ends when the job's outcome has arrived."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._next = 0

    def put(self, number: int, text: str) -> None:
        if number >= self._next:
            self._next = number + 1
            self._queue.put_nowait(text)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def __aiter__(self) -> Deltas:
        return self

    async def __anext__(self) -> str:
        text = await self._queue.get()
        if text is None:
            self._queue.put_nowait(None)  # stays ended for any later reader
            raise StopAsyncIteration
        return text


class ReplyRouter:
    def __init__(self, redis: aioredis.Redis, job_key: Callable[[str], str], *,
                 block_ms: int = 1_000, wire: Wire | None = None) -> None:
        self._redis = redis
        self._wire = wire
        """The blocking read's own connection (see ``broker/wire.py``); None: the pool."""
        self._job_key = job_key
        self._block_ms = block_ms
        self._last: dict[str, str] = {}
        # Futures carry the outcome's raw JSON: it is parsed when a caller asks for it,
        # so a burst of waiting jobs holds strings, not object graphs for the GC to walk.
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._deltas: dict[str, Deltas] = {}
        self._since: dict[str, float] = {}  # registration times, oldest first
        self._incoming: deque[tuple[str, asyncio.Future[str], Deltas | None, float]] = deque()
        """Registrations queued from other threads (see :meth:`register_soon`)."""
        self._task: asyncio.Task[None] | None = None
        self._cluster = is_cluster(redis)
        self._readers: dict[str, asyncio.Task[None]] = {}
        """On a cluster: each reply stream's reader."""
        self._wakers: set[asyncio.Task[None]] = set()
        self._closing = False
        self._swept = time.monotonic()
        self._unread_trim = 0  # entries read since the streams were last trimmed
        self.observer: Callable[[str], None] | None = None
        """Called with the job id of every outcome read from a reply stream, awaited or
        not (``switchyard bench chaos`` counts duplicate results with it)."""

    def expect(self, job_id: str, reply_stream: str, *, deltas: bool = False
               ) -> tuple[asyncio.Future[str], Deltas | None]:
        """Register interest in a job's outcome (and with ``deltas``, its text deltas)
        before the job is submitted."""
        future, collected = self.waiter(asyncio.get_running_loop(), deltas)
        self.register(job_id, reply_stream, future, collected)
        return future, collected

    @staticmethod
    def waiter(loop: asyncio.AbstractEventLoop, deltas: bool
               ) -> tuple[asyncio.Future[str], Deltas | None]:
        """A future of ``loop`` for an outcome, and a ``Deltas`` if asked for; made in any
        thread (the sync client's), handed to :meth:`register` on the loop."""
        return loop.create_future(), Deltas() if deltas else None

    def register(self, job_id: str, reply_stream: str, future: asyncio.Future[str],
                 deltas: Deltas | None) -> None:
        """Deliver the job's outcome to ``future`` (and its deltas to ``deltas``). Runs on
        the router's loop; the sync client schedules it there (``call_soon_threadsafe``)
        before it sends the job, so it is in place before any reply can be read."""
        if reply_stream not in self._last:
            # A new stream joins the blocking read at once: wake the reader (cancelling a
            # blocked read instead can wedge the client's connection pool).
            if not self._cluster and self._task is not None and not self._task.done():
                self._wakers.add(asyncio.create_task(self._wake()))
            self._last[reply_stream] = "0-0"
        if deltas is not None:
            self._deltas[job_id] = deltas
        self._waiters[job_id] = future
        self._since[job_id] = time.monotonic()
        self._ensure_reader(reply_stream)

    def _ensure_reader(self, stream: str) -> None:
        if self._cluster:
            task = self._readers.get(stream)
            if task is None or task.done():
                self._readers[stream] = asyncio.create_task(
                    self._run(stream), name=f"switchyard-replies:{stream}")
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="switchyard-replies")

    def _reading(self, stream: str) -> bool:
        """Whether a running reader reads ``stream`` already."""
        task = self._readers.get(stream) if self._cluster else self._task
        return stream in self._last and task is not None and not task.done()

    def register_soon(self, loop: asyncio.AbstractEventLoop, job_id: str, reply_stream: str,
                      future: asyncio.Future[str], deltas: Deltas | None) -> None:
        """:meth:`register`, from another thread (the sync client's), before the job is
        sent. On a reply stream the running reader reads already, the registration is
        queued, and the reader takes the queue in before it hands out anything it read
        next: the job's reply cannot come before that read, so its loop need not be woken
        for it (a wake-up a call cost the sync client a fifth of its CPU). Otherwise (a
        new stream, no reader running) it is scheduled on ``loop`` at once."""
        if self._reading(reply_stream):
            self._incoming.append((job_id, future, deltas, time.monotonic()))
        else:
            loop.call_soon_threadsafe(self.register, job_id, reply_stream, future, deltas)

    def _adopt(self) -> None:
        """Take in the registrations queued by :meth:`register_soon` (on the loop)."""
        incoming = self._incoming
        while incoming:
            job_id, future, deltas, since = incoming.popleft()
            if deltas is not None:
                self._deltas[job_id] = deltas
            self._waiters[job_id] = future
            self._since[job_id] = since

    def forget(self, job_id: str) -> None:
        self._adopt()
        future = self._pop(job_id)
        if future is not None and not future.done():
            future.cancel()

    def _pop(self, job_id: str) -> asyncio.Future[str] | None:
        self._since.pop(job_id, None)
        deltas = self._deltas.pop(job_id, None)
        if deltas is not None:
            deltas.close()
        return self._waiters.pop(job_id, None)

    async def _wake(self) -> None:
        """Return the readers from their blocking reads: an entry with no job id, ignored
        (on a cluster, one on each reader's stream)."""
        with contextlib.suppress(*REDIS_FAILURES):
            for stream in list(self._last)[:None if self._cluster else 1]:
                await self._redis.xadd(stream, {"wake": "1"})

    async def _run(self, only: str | None = None) -> None:
        """Read replies until closed: those of stream ``only``, or (None) of every stream."""
        backoff = Backoff(first=0.05, most=1.0)
        while not self._closing:
            try:
                if await self._read_once(only):
                    await asyncio.sleep(0)  # the callers it answered run before its next read
                if time.monotonic() - self._swept > RECHECK_S:
                    await self._sweep()
                backoff.reset()
            except REDIS_FAILURES as exc:
                delay = backoff.next()
                log.warning("reply reader: %s; retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                await refresh_topology(self._redis, exc)
            except Exception:  # a reader that died would leave its callers waiting forever
                delay = backoff.next()
                log.exception("reply reader failed; retrying in %.2fs", delay)
                await asyncio.sleep(delay)

    async def _read_once(self, only: str | None = None) -> bool:
        """One read; whether it answered any caller."""
        if self._wire is None:
            entries = parse_stream_reply(await self._read_on_pool(only))
            self._adopt()
            for entry in entries:
                self._last[entry.stream] = entry.entry_id
                self._route(entry.fields)
            self._unread_trim += len(entries)
            return bool(entries)
        reply = await self._read_on_wire(self._wire)
        self._adopt()
        if not isinstance(reply, list):  # (nil: the block timed out)
            return False
        read = 0
        for stream, messages in reply:  # RESP2: [[stream, [[entry id, [k, v, ...]], ...]]]
            for _, fields in messages:
                if not fields:
                    continue
                # An outcome (the usual entry) is delivered as it is, without a dict.
                if (len(fields) == 4 and fields[0] == "id" and fields[2] == "o"
                        and self.observer is None):
                    self._deliver(fields[1], fields[3])
                else:
                    self._route(dict(zip(fields[::2], fields[1::2], strict=False)))
            if messages:
                self._last[stream] = messages[-1][0]
                read += len(messages)
        self._unread_trim += read
        return read > 0

    def _route(self, fields: dict[str, str]) -> None:
        """One reply entry's fields to whoever waits for them."""
        job_id = fields.get("id", "")
        if "fwd" in fields:
            self._forward(job_id, fields["fwd"], fields.get("fr", ""))
        elif "t" in fields:
            deltas = self._deltas.get(job_id)
            if deltas is not None and fields.get("n", "").isdigit():
                deltas.put(int(fields["n"]), fields["t"])
        elif "o" in fields:
            if self.observer is not None:
                self.observer(job_id)
            self._deliver(job_id, fields["o"])

    async def _read_on_wire(self, wire: Wire) -> object:
        commands: list[list[str | int]] = []
        if self._unread_trim >= TRIM_EVERY:  # trim what was read, in the same round trip
            commands = [["XTRIM", stream, "MINID", last]
                        for stream, last in self._last.items() if last != "0-0"]
            self._unread_trim = 0
        commands.append(["XREAD", "COUNT", 1_000, "BLOCK", self._block_ms, "STREAMS",
                         *self._last, *self._last.values()])
        replies = await wire.calls(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[-1]

    async def _read_on_pool(self, only: str | None) -> object:
        streams: dict[Any, Any] = dict(self._last) if only is None else {only: self._last[only]}
        read = ("XREAD", "COUNT", 1_000, "BLOCK", self._block_ms, "STREAMS",
                *streams, *streams.values())
        where = at_node(self._redis, next(iter(streams)))
        if self._unread_trim < TRIM_EVERY:
            return await command(self._redis, *read, **where)
        pipe = self._redis.pipeline(transaction=False)  # trim, in the read's round trip
        for stream, last in streams.items():
            if last != "0-0":
                pipe.xtrim(stream, minid=last, approximate=False)
        pipe.execute_command(*read, **where)
        self._unread_trim = 0
        return (await pipe.execute())[-1]

    async def _sweep(self) -> None:
        """Re-read the records of jobs that waited longer than RECHECK_S."""
        self._adopt()
        self._swept = time.monotonic()
        old = list(itertools.islice(itertools.takewhile(
            lambda job_id: self._swept - self._since[job_id] > RECHECK_S, self._since), SWEEP_MAX))
        if not old:
            return
        pipe = self._redis.pipeline(transaction=False)
        for job_id in old:
            pipe.hmget(self._job_key(job_id), ["state", "outcome"])
        for job_id, (state, outcome) in zip(old, await pipe.execute(), strict=True):
            if outcome:
                self._deliver(job_id, outcome)
            elif state is None:
                future = self._pop(job_id)
                if future is not None and not future.done():
                    future.set_exception(JobNotFound(f"job {job_id} has no record any more"))
            else:  # still waiting: check it again next sweep, after the younger ones
                self._since[job_id] = self._since.pop(job_id)

    def _forward(self, job_id: str, copy_id: str, copy_reply: str) -> None:
        """The job was spilled to another pool as ``copy_id``: wait for that one, on its
        reply stream (read from the next round on)."""
        future = self._waiters.pop(job_id, None)
        if future is None or not copy_reply:
            return
        self._waiters[copy_id] = future
        self._since[copy_id] = self._since.pop(job_id, time.monotonic())
        deltas = self._deltas.pop(job_id, None)
        if deltas is not None:
            self._deltas[copy_id] = deltas
        self._last.setdefault(copy_reply, "0-0")
        self._ensure_reader(copy_reply)

    def _deliver(self, job_id: str, raw: str) -> None:
        future = self._pop(job_id)
        if future is not None and not future.done():
            future.set_result(raw)

    async def aclose(self) -> None:
        self._closing = True
        tasks = [t for t in (self._task, *self._readers.values()) if t is not None]
        if any(not t.done() for t in tasks):
            await self._wake()
        for task in tasks:
            try:
                await asyncio.wait_for(asyncio.shield(task), self._block_ms / 1000 + 1)
            except _CLOSING_FAILURES:
                task.cancel()
        await asyncio.gather(*self._wakers, return_exceptions=True)
        self._adopt()
        for future in self._waiters.values():
            future.cancel()
        for deltas in self._deltas.values():
            deltas.close()
        self._waiters.clear()
        self._deltas.clear()
        self._since.clear()
        if self._wire is not None:
            await self._wire.aclose()
        if self._last:
            # one DEL per stream (a cluster has them on several slots), one round trip
            pipe = self._redis.pipeline(transaction=False)
            for stream in self._last:
                pipe.delete(stream)
            await pipe.execute()
