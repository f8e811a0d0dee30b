"""The lean pipelined connection (issue 15, ``broker/wire.py``) against a real server:
replies in order with errors in place and typed as redis-py's, AUTH and SELECT, a
connection that drops or a server that hangs failing the waiting calls typed, and a
cancelled call not shifting the replies of the next ones."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis
from redis.exceptions import AuthenticationError, ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from switchyard.broker.settings import RedisSettings
from switchyard.broker.wire import Wire
from switchyard.ops.redis_server import RedisServer
from tests.conftest import OWN_PASSWORD


def _wire(url: str, **kwargs: float) -> Wire:
    wire = Wire.of(RedisSettings.from_url(url).connect(), **kwargs)
    assert wire is not None
    return wire


async def test_replies_come_in_order_with_each_error_in_its_place(redis_url: str) -> None:
    wire = _wire(redis_url)
    try:
        await wire.call("SET", "wire:s", "text")
        replies = await wire.calls([("GET", "wire:s"), ("INCR", "wire:s"),
                                    ("EVALSHA", "0" * 40, 0), ("PING",)])
        assert replies[0] == "text" and replies[3] == "PONG"
        assert type(replies[1]) is ResponseError and "not an integer" in str(replies[1])
        assert isinstance(replies[2], NoScriptError)
        with pytest.raises(ResponseError, match="not an integer"):
            await wire.call("INCR", "wire:s")
        many = await asyncio.gather(*(wire.call("INCR", "wire:n") for _ in range(200)))
        assert sorted(many) == list(range(1, 201))
        assert await wire.call("GET", "wire:bad") is None
        redis.Redis.from_url(redis_url).set("wire:bad", b"\xff\xfeok")
        assert await wire.call("GET", "wire:bad") == "\ufffd\ufffdok"  # not a broken reader
    finally:
        await wire.aclose()
        redis.Redis.from_url(redis_url).delete("wire:s", "wire:n", "wire:bad")


async def test_a_cancelled_call_does_not_shift_the_replies_after_it(redis_url: str) -> None:
    wire = _wire(redis_url)
    try:
        blocked = asyncio.create_task(wire.call("XREAD", "BLOCK", 300, "STREAMS", "wire:x", "$"))
        await asyncio.sleep(0.05)
        blocked.cancel()
        assert await wire.call("ECHO", "mine") == "mine"  # answered after the XREAD's nil
    finally:
        await wire.aclose()


async def test_auth_and_select_come_from_the_url(own_redis: RedisServer) -> None:
    url = own_redis.url.rsplit("/", 1)[0] + "/3"
    wire = _wire(url)
    try:
        await wire.call("SET", "k", "in db 3")
        assert redis.Redis.from_url(url).get("k") == b"in db 3"
    finally:
        await wire.aclose()
    wrong = _wire(url.replace(OWN_PASSWORD, "nope"))
    with pytest.raises(AuthenticationError):
        await wrong.call("PING")
    await wrong.aclose()


async def test_a_dropped_connection_fails_its_calls_and_the_next_call_reconnects(
    own_redis: RedisServer,
) -> None:
    wire = _wire(own_redis.url)
    try:
        blocked = asyncio.create_task(wire.call("XREAD", "BLOCK", 5000, "STREAMS", "x", "$"))
        await asyncio.sleep(0.1)
        redis.Redis.from_url(own_redis.url).client_kill_filter(_type="normal",
                                                              skipme=True)
        with pytest.raises(ConnectionError):
            await blocked
        assert await wire.call("PING") == "PONG"
    finally:
        await wire.aclose()


async def test_a_server_that_stops_answering_times_the_calls_out(
    own_redis: RedisServer,
) -> None:
    wire = _wire(own_redis.url, timeout_s=0.3)
    try:
        assert await wire.call("PING") == "PONG"
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(RedisTimeout):
            await wire.call("PING")
        assert time.monotonic() - started < 1.5
        os.kill(own_redis.process.pid, signal.SIGCONT)
        assert await wire.call("PING") == "PONG"  # a new connection
    finally:
        await wire.aclose()


async def test_a_call_while_the_connection_closes_fails_the_old_calls(redis_url: str) -> None:
    """The connection is closing when a new call comes: the calls still waiting on it
    fail, and no reply on the new connection answers them. (Here its loss is reported
    before the new connection is up; the wire also fails them itself when it is not, as
    with a close that waits to flush a full write buffer.)"""
    wire = _wire(redis_url)
    try:
        assert await wire.call("PING") == "PONG"
        blocked = asyncio.create_task(wire.call("XREAD", "BLOCK", 2000, "STREAMS", "wire:y", "$"))
        await asyncio.sleep(0.05)
        assert wire._transport is not None
        wire._transport.close()
        assert await asyncio.wait_for(wire.call("ECHO", "new"), 1) == "new"
        with pytest.raises(ConnectionError):
            await blocked
    finally:
        await wire.aclose()


def test_it_runs_on_uvloop(redis_url: str) -> None:
    """The gateway serves on uvloop, whose transports are not ``asyncio.Transport``
    subclasses (a type check there failed every enqueue of the gateway with a 500)."""
    import uvloop

    async def calls() -> list[object]:
        wire = _wire(redis_url)
        try:
            return await wire.calls([("SET", "wire:uv", "1"), ("GET", "wire:uv")])
        finally:
            await wire.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(calls()) == ["OK", "1"]
