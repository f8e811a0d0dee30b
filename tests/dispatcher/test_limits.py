"""Bounded input at the boundary (issue 14, point 4): oversized or invalid requests fail
with InvalidRequest, for that call only, before anything reaches Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys
from switchyard.dispatcher import AsyncClient, InvalidRequest
from tests.conftest import make_config

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("call", "args", "match"), [
    ("embed", {"input": "x" * 10_000_000}, "max_request_bytes"),
    ("embed", {"input": ["x"] * 100_000}, "max_texts"),
    ("chat", {"messages": [{"role": "user", "content": "y" * 20_000_000}]},
     "max_request_bytes"),
    ("chat", {"messages": USER, "stop": ["s" * 1_000_000]}, "max_stop_chars"),
    ("chat", {"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "max_stop"),
    ("chat", {"messages": USER, "seed": 2**64}, "seed"),
    ("chat", {"messages": USER, "seed": -(2**63) - 1}, "seed"),
    ("embed", {"input": ["fine", "bad \ud800 text"]}, r"input\[1\] is not valid Unicode"),
    ("chat", {"messages": [{"role": "user", "content": "\udfff"}]}, "not valid Unicode"),
    ("embed", {"input": "x", "idempotency_key": "k\ud800"}, "idempotency_key is not valid"),
])
async def test_oversized_and_invalid_requests_are_refused(
    prefix: str, redis_url: str, aredis: aioredis.Redis, call: str, args: dict[str, Any],
    match: str,
) -> None:
    model = "echo" if call == "embed" else "echo-chat"
    async with AsyncClient(make_config(prefix), redis_url=redis_url) as client:
        with pytest.raises(InvalidRequest, match=match):
            await getattr(client, call)(model, **args)
    assert not await aredis.exists(Keys(prefix).partition("echo", 0).stream("standard"))


async def test_a_bad_call_fails_alone_and_leaks_no_waiter(prefix: str, redis_url: str) -> None:
    """Calls coalesced with one carrying a lone surrogate are admitted as usual."""
    async with AsyncClient(make_config(prefix), redis_url=redis_url) as client:
        results = await asyncio.gather(
            *(client.embed("echo", "ok" if i != 5 else "\ud800") for i in range(20)),
            return_exceptions=True)
        assert [isinstance(r, InvalidRequest) for r in results] == [i == 5 for i in range(20)]
        assert len({r.id for r in results if not isinstance(r, BaseException)}) == 19
        assert len(client.replies._waiters) == 19  # the refused call left no waiter behind


async def test_limits_are_configurable(prefix: str, redis_url: str) -> None:
    data = make_config(prefix).model_dump()
    data["limits"] = {"max_texts": 2, "max_request_bytes": "1KiB"}
    from switchyard.broker import SwitchyardConfig
    config = SwitchyardConfig.model_validate(data)
    async with AsyncClient(config, redis_url=redis_url) as client:
        await client.embed("echo", ["a", "b"])
        with pytest.raises(InvalidRequest, match="at most 2"):
            await client.embed("echo", ["a", "b", "c"])
        with pytest.raises(InvalidRequest, match="at most 1024"):
            await client.embed("echo", "x" * 1025)
