"""Same-run baselines for `switchyard bench queue`: minimal redis-py Streams loops with
none of Switchyard's machinery, on the same server.

- :func:`raw_ceiling`: throughput. Pipelined XADD, then XREADGROUP COUNT 100, a result
  write and XACK per read, in one process.
- :func:`bare_evalsha`: the sync one-call-per-job ceiling. A sync redis-py loop, one
  ``EVALSHA`` round trip per call (a one-line script that XADDs).
- :func:`raw_echo`: latency at a steady rate. An asyncio client XADDs a request and
  waits on a reply stream (XREAD BLOCK, one reader task); an asyncio consumer process
  answers (XREADGROUP BLOCK, XADD reply, XACK). The same hops a Switchyard job takes,
  with no work at either end: the floor this machine puts under any queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import redis
import redis.asyncio as aioredis

__all__ = ["bare_evalsha", "open_loop", "raw_ceiling", "raw_consumer", "raw_echo"]

_Q, _R, _G = "bench-raw:lat:q", "bench-raw:lat:r", "g"


def raw_ceiling(url: str, n: int, payload: str) -> float:
    """Jobs/s of the bare Streams loop: produce n entries, then consume them in 100s."""
    r = redis.Redis.from_url(url, decode_responses=True)
    stream, group = "bench-raw:q", "g"
    r.delete(stream)
    r.xgroup_create(stream, group, id="0", mkstream=True)
    start = time.perf_counter()
    for chunk in range(0, n, 1_000):
        pipe = r.pipeline(transaction=False)
        for i in range(chunk, min(n, chunk + 1_000)):
            pipe.xadd(stream, {"id": str(i), "d": payload})
        pipe.execute()
    done = 0
    while done < n:
        reply: Any = r.xreadgroup(group, "c", {stream: ">"}, count=100)
        entries = reply[0][1]
        pipe = r.pipeline(transaction=False)
        for _, fields in entries:
            pipe.set(f"bench-raw:res:{fields['id']}", fields["d"], ex=60)
        pipe.xack(stream, group, *[e[0] for e in entries])
        pipe.execute()
        done += len(entries)
    elapsed = time.perf_counter() - start
    r.close()
    return n / elapsed


def bare_evalsha(url: str, n: int, payload: str) -> float:
    """Calls/s of a bare sync loop of one-line ``EVALSHA`` scripts (one round trip each)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    sha = r.script_load("return redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])")
    stream = "bench-raw:evalsha"
    r.delete(stream)
    start = time.perf_counter()
    for _ in range(n):
        r.evalsha(sha, 1, stream, payload)
    elapsed = time.perf_counter() - start
    r.delete(stream)
    r.close()
    return n / elapsed


async def open_loop(one: Callable[[], Coroutine[Any, Any, float]], rate: float, seconds: float,
                    warmup: int = 20) -> list[float]:
    """Start ``one`` at a steady rate (not waiting for earlier ones); their latencies."""
    for _ in range(warmup):
        await one()
    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    return list(await asyncio.gather(*tasks))


async def raw_consumer(url: str) -> None:
    """The answering side of :func:`raw_echo`, run in its own process."""
    r = aioredis.Redis.from_url(url, decode_responses=True)
    while True:
        reply: Any = await r.xreadgroup(_G, "c", {_Q: ">"}, count=100, block=1_000)
        if not reply:
            continue
        entries = reply[0][1]
        pipe = r.pipeline(transaction=False)
        for _, fields in entries:
            pipe.xadd(_R, {"id": fields["id"], "o": fields["d"]})
        pipe.xack(_Q, _G, *[e[0] for e in entries])
        await pipe.execute()
        if any("stop" in fields for _, fields in entries):
            break
    await r.aclose()


@contextlib.asynccontextmanager
async def raw_echo(url: str, payload: str
                   ) -> AsyncIterator[Callable[[], Coroutine[Any, Any, float]]]:
    """The request/reply floor's caller: one request's latency in ms per call (see the
    module doc), for as long as the context is open."""
    r = aioredis.Redis.from_url(url, decode_responses=True)
    await r.delete(_Q, _R)
    await r.xgroup_create(_Q, _G, id="0", mkstream=True)
    code = ("import asyncio, sys; from switchyard.ops.bench.raw import raw_consumer; "
            "asyncio.run(raw_consumer(sys.argv[1]))")
    consumer = subprocess.Popen([sys.executable, "-c", code, url])  # noqa: ASYNC220
    waiters: dict[str, asyncio.Future[None]] = {}

    async def reader() -> None:
        last = "0-0"
        while True:
            reply: Any = await r.xread({_R: last}, count=1_000, block=1_000)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    future = waiters.pop(fields["id"], None)
                    if future is not None:
                        future.set_result(None)

    counter = iter(range(10**9))

    async def one() -> float:
        job = str(next(counter))
        future = waiters[job] = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await r.xadd(_Q, {"id": job, "d": payload})
        await future
        return (time.perf_counter() - t0) * 1000

    reading = asyncio.create_task(reader())
    try:
        yield one
    finally:
        await r.xadd(_Q, {"id": "-", "d": "", "stop": "1"})
        reading.cancel()
        try:
            consumer.wait(10)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()
        await r.aclose()
