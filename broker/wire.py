"""A lean, pipelined asyncio connection to Redis for the hot paths.

redis-py's asyncio client spends about twice a loopback round trip of CPU on each command
(a pool checkout with its locks and a readiness probe, a ``wait_for`` task per send, retry
and observability wrappers, reply callbacks): more than the enqueue script itself. A
:class:`Wire` is one connection that any number of coroutines share: each call writes
its command at once (packed by hiredis) and awaits a future; replies, parsed by
``hiredis.Reader``, answer the futures in order. The enqueue path, the reply reader and
the worker's read, start and complete use it; everything else uses redis-py.

Errors are redis-py's own classes, so callers catch them as before: an error reply is a
``ResponseError`` (``NoScriptError``, ``OutOfMemoryError``, ...) for that call only; a
connection that drops fails every call waiting on it with ``ConnectionError``, and the next
call connects again. Every call is answered or failed within ``timeout_s``: when the
oldest unanswered call (replies come in order, so every other waits behind it) has
waited that long, the connection is closed and its calls fail with ``TimeoutError`` (Redis
hung, a half-open socket). One timer per connection, moved as replies come: no timer per
call. Plain TCP and
unix sockets, with AUTH and SELECT from the client's settings; TLS stays with redis-py
(:meth:`Wire.of` returns None for it).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

__all__ = ["Wire"]

Arg = str | int | float | bytes


class _Protocol(asyncio.Protocol):
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        # Text that is not UTF-8 (a hostile stream entry) is read with replacement marks:
        # the entry then fails to decode and is dead-lettered, not the reading loop.
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace",
                                      replyError=ResponseError)
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending, sent = self._wire._pending, self._wire._sent
        while (reply := self._reader.gets()) is not False:
            future = pending.popleft()
            sent.popleft()
            if not future.done():
                future.set_result(reply)
        self._wire._progress()

    def connection_lost(self, exc: Exception | None) -> None:
        self._wire._lost(self._transport,
                         ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))


class Wire:
    def __init__(self, *, host: str | None = None, port: int = 6379, path: str | None = None,
                 username: str | None = None, password: str | None = None, db: int = 0,
                 connect_timeout_s: float = 5.0, timeout_s: float = 30.0) -> None:
        self._address = (host, port, path)
        self._auth = (username, password)
        self._db = db
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._transport: asyncio.Transport | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._sent: deque[float] = deque()
        """When each pending call was written (loop time), in the same order."""
        self._connecting: asyncio.Lock | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    def of(cls, redis: aioredis.Redis, timeout_s: float | None = None) -> Wire | None:
        """A wire to the server ``redis`` talks to, with its credentials and database;
        None for TLS and for a Redis Cluster (redis-py keeps those). ``timeout_s``: default,
        its socket timeout."""
        if isinstance(redis, aioredis.RedisCluster):
            return None
        pool = redis.connection_pool
        if issubclass(pool.connection_class, aioredis.SSLConnection):
            return None
        kw = pool.connection_kwargs
        return cls(host=kw.get("host"), port=int(kw.get("port") or 6379), path=kw.get("path"),
                   username=kw.get("username"), password=kw.get("password"),
                   db=int(kw.get("db") or 0),
                   connect_timeout_s=float(kw.get("socket_connect_timeout") or 5.0),
                   timeout_s=timeout_s or float(kw.get("socket_timeout") or 30.0))

    async def call(self, *args: Arg) -> Any:
        """One command's reply; an error reply raises (as its redis-py class)."""
        reply = (await self.calls([args]))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def calls(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one write; their replies in order, an error reply left in
        its place (as its redis-py class)."""
        if self._transport is None or self._transport.is_closing():
            await self._connect()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        assert self._transport is not None
        self._transport.write(b"".join(_pack(c) for c in commands))
        now = loop.time()
        self._pending.extend(futures)
        self._sent.extend([now] * len(futures))
        if self._watch is None:
            self._watch = loop.call_at(now + self._timeout_s, self._stalled)
        try:
            return [_typed(await future) for future in futures]
        except BaseException:  # cancelled: the replies still come, and are dropped
            for future in futures:
                future.cancel()
            raise

    async def _connect(self) -> None:
        if self._closed:
            raise ConnectionError("the connection was closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._transport is not None and not self._transport.is_closing():
                return
            # Calls still waiting belong to the old connection (closing, its loss not yet
            # reported): they fail now, so no reply on the new one answers them.
            self._transport = None
            self._fail(ConnectionError("connection to Redis lost"))
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    await self._open()
            except TimeoutError as exc:
                raise TimeoutError(f"Redis did not accept a connection within "
                                   f"{self._connect_timeout_s:g} s") from exc
            except OSError as exc:
                raise ConnectionError(f"cannot connect to Redis: {exc}") from exc

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        host, port, path = self._address
        transport: asyncio.BaseTransport
        if path is not None:
            transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), path)
        else:
            transport, _ = await loop.create_connection(lambda: _Protocol(self),
                                                        host or "localhost", port)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # (no isinstance check: uvloop's transports are not asyncio.Transport subclasses)
        self._transport = transport
        hello: list[Sequence[Arg]] = []
        username, password = self._auth
        if password:
            hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if self._db:
            hello.append(("SELECT", self._db))
        for reply in await self.calls(hello) if hello else []:
            if isinstance(reply, Exception):  # WRONGPASS: AuthenticationError, and so on
                transport.close()
                raise reply

    def _progress(self) -> None:
        """Replies came: with nothing left waiting, the timer stops (else it stays: when
        it fires, it moves on to the oldest call then waiting, if that one is not late)."""
        if not self._pending and self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _stalled(self) -> None:
        self._watch = None
        if not self._pending or self._transport is None:
            return
        late = self._sent[0] + self._timeout_s
        if late > asyncio.get_running_loop().time():  # (answered meanwhile: a newer head)
            self._watch = asyncio.get_running_loop().call_at(late, self._stalled)
            return
        transport, self._transport = self._transport, None
        self._fail(TimeoutError(f"Redis did not answer within {self._timeout_s:g} s"))
        transport.abort()

    def _lost(self, transport: asyncio.BaseTransport | None, error: Exception) -> None:
        if transport is not None and transport is self._transport:  # (not one given up)
            self._transport = None
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._sent.clear()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    async def aclose(self) -> None:
        self._closed = True
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.close()
            self._fail(ConnectionError("the connection was closed"))


def _typed(reply: Any) -> Any:
    """An error reply as redis-py's class for it (NOSCRIPT, OOM, WRONGPASS...)."""
    if isinstance(reply, ResponseError) and type(reply) is ResponseError:
        return BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return reply


def _pack(command: Sequence[Arg]) -> bytes:
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]  # (stub)
    return packed
