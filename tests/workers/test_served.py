"""The ``served`` engine in front of a serving engine (issue 17, point 8), tested against
``switchyard fake-engine``: a look-alike of vLLM and SGLang with a KV-cache pool, their
metric names, a FIFO beyond its room, and aborts on disconnect (neither real engine
installs here)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from switchyard.broker.keys import Keys
from switchyard.dispatcher import AsyncClient
from switchyard.ops.fake_engine import EngineShape, FakeEngine, command
from switchyard.ops.redis_server import free_port
from switchyard.ops.status import collect, render
from switchyard.workers.engines.served import ServedEngine
from switchyard.workers.supervisor import stop_process
from tests.conftest import StartWorker, make_config


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_stats", timeout=5) as response:
        return dict(json.loads(response.read()))


def _config(prefix: str, url: str, **served: Any) -> Any:
    return make_config(prefix, llm={"engine": "served", "model": "fake-llm", "max_batch": 8,
                                    "served": {"url": url, "scrape_ms": 50, **served}})


async def _engine(config: Any) -> ServedEngine:
    engine = ServedEngine(config.pools["llm"])
    await engine.warmup()
    return engine


def _ask(client: AsyncClient, text: str, priority: str = "standard", tokens: int = 8,
         stream: bool = False) -> Any:
    return client.chat("llm", [{"role": "user", "content": text}], max_tokens=tokens,
                       priority=priority, stream=stream)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> Iterator[FakeEngine]:
    with FakeEngine(EngineShape(max_seqs=4, token_ms=5)) as engine:
        yield engine


async def test_pulls_never_exceed_the_engines_room_and_keep_it_full(
    prefix: str, redis_url: str, start_worker: StartWorker, fake: FakeEngine
) -> None:
    config = _config(prefix, fake.url, max_running=4)
    engine = await _engine(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await _ask(client, f"q{i}") for i in range(24)]
        await start_worker(config, "llm", engine)
        results = [await job.result(timeout=60) for job in jobs]
    await engine.aclose()
    assert {r.text for r in results} == {" ".join(f"w{i}" for i in range(1, 9))}
    stats = _stats(fake.url)
    assert stats["most_waiting"] == 0 and stats["most_running"] == 4
    assert stats["completed"] == 24


async def test_a_cache_bound_engine_is_sent_what_its_cache_holds(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    """64 sequences allowed, but blocks for only six requests: room comes from the KV
    cache (its capacity, then the use per running request), not the sequence limit."""
    with FakeEngine(EngineShape(max_seqs=64, blocks=12, block_tokens=16, token_ms=5)) as fake:
        config = _config(prefix, fake.url, max_running=64)
        engine = await _engine(config)
        async with AsyncClient(config, redis_url=redis_url) as client:
            jobs = [await _ask(client, f"q{i}", tokens=30) for i in range(30)]
            await start_worker(config, "llm", engine)
            results = [await job.result(timeout=60) for job in jobs]
        await engine.aclose()
        stats = _stats(fake.url)
    assert len(results) == 30 and stats["completed"] == 30
    assert stats["most_waiting"] <= 1 and stats["most_running"] >= 4


async def test_priorities_hold_while_the_engine_is_full(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    """Batch work fills the engine; interactive jobs enqueued then go next, ahead of the
    batch jobs still in Redis: they are not stuck behind them in the engine's FIFO."""
    with FakeEngine(EngineShape(max_seqs=2, token_ms=10)) as fake:
        config = _config(prefix, fake.url, max_running=2)
        engine = await _engine(config)
        async with AsyncClient(config, redis_url=redis_url) as client:
            batch = [await _ask(client, f"batch{i}", "batch") for i in range(20)]
            await start_worker(config, "llm", engine)
            for _ in range(5_000):
                if len(_stats(fake.url)["order"]) >= 2:
                    break
                await asyncio.sleep(0.002)
            urgent = [await _ask(client, f"urgent{i}", "interactive") for i in range(4)]
            for job in [*urgent, *batch]:
                await job.result(timeout=60)
        await engine.aclose()
        order = _stats(fake.url)["order"]
    last_urgent = max(order.index(f"urgent{i}") for i in range(4))
    assert last_urgent < 2 + 2 + 4 + 2  # at most the batches in flight and read ahead
    assert sum(1 for tag in order[last_urgent:] if tag.startswith("batch")) >= 10


async def test_streams_pass_through_and_a_cancel_aborts_the_engine_request(
    prefix: str, redis_url: str, start_worker: StartWorker, fake: FakeEngine
) -> None:
    config = _config(prefix, fake.url, max_running=4)
    engine = await _engine(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        await start_worker(config, "llm", engine)
        job = await _ask(client, "stream me", tokens=12, stream=True)
        streamed = "".join([d async for d in job])
        assert streamed == (await job.result(timeout=30)).text == " ".join(
            f"w{i}" for i in range(1, 13))
        long = await _ask(client, "cancel me", tokens=2_000, stream=True)
        async for _ in long:
            break
        await long.cancel()
        for _ in range(2_000):
            if _stats(fake.url)["aborted"]:
                break
            await asyncio.sleep(0.005)
    await engine.aclose()
    assert _stats(fake.url)["aborted"] == 1


async def test_a_killed_engine_loses_no_job_and_spends_no_attempt(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: Any
) -> None:
    port = free_port()
    shape = EngineShape(max_seqs=4, token_ms=20)
    url = f"http://127.0.0.1:{port}"
    config = _config(prefix, url, max_running=4)
    config = config.model_copy(update={"watchdog": config.watchdog.model_copy(
        update={"max_attempts": 1})})  # a spent attempt would dead-letter the job
    process = _start(port, shape)
    try:
        _wait_up(url)
        engine = await _engine(config)
        async with AsyncClient(config, redis_url=redis_url) as client:
            jobs = [await _ask(client, f"q{i}", tokens=10) for i in range(16)]
            worker = await start_worker(config, "llm", engine)
            await asyncio.sleep(0.3)  # some done, four running
            process.kill()
            process.wait()
            for _ in range(2_000):
                if not engine.healthy:
                    break
                await asyncio.sleep(0.005)
            assert not engine.healthy
            await worker._heartbeat.beat()
            pools = await collect(client.redis, config)
            assert "down" in render(pools)
            process = _start(port, shape)
            results = [await job.result(timeout=60) for job in jobs]
        await engine.aclose()
    finally:
        with contextlib.suppress(Exception):
            stop_process(process, 5)
    assert len(results) == 16 and worker.stats.released >= 1
    assert await aredis.xlen(Keys(prefix).partitions("llm", 1)[0].dead) == 0


def _start(port: int, shape: EngineShape) -> subprocess.Popen[bytes]:
    """The fake engine in a process of its own (it is killed, by PID, mid-test)."""
    return subprocess.Popen(command(port, shape), stdout=subprocess.DEVNULL)


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=1).close()
            return
        time.sleep(0.05)
    raise AssertionError(f"no fake engine at {url}")


def test_metrics_are_read_in_vllms_names_and_sglangs() -> None:
    from switchyard.workers.engines.engine_load import parse_metrics

    vllm = ('vllm:cache_config_info{block_size="16",num_gpu_blocks="100"} 1.0\n'
            'vllm:num_requests_running{model_name="m"} 3.0\n'
            'vllm:num_requests_waiting{model_name="m"} 1.0 1700000000\n'
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n')  # before vLLM 0.10's name
    sglang = "sglang:num_running_reqs 2\nsglang:num_queue_reqs 0\nsglang:token_usage 0.25\n"
    load = parse_metrics(vllm)
    assert load is not None and (load.running, load.waiting, load.kv, load.capacity) == (
        3, 1, 0.5, 1600)
    load = parse_metrics(sglang, "sglang")
    assert load is not None and (load.kind, load.running, load.kv) == ("sglang", 2, 0.25)
    assert parse_metrics(sglang, "vllm") is None and parse_metrics("up 1\n") is None


def test_room_counts_what_the_reading_cannot_show() -> None:
    from switchyard.broker.config import ServedConfig
    from switchyard.workers.engines.engine_load import EngineLoad, room

    settings = ServedConfig(max_running=8, max_waiting=0, kv_high=0.9)
    idle = EngineLoad(0, 0, 0.0, "vllm", capacity=1000)
    assert room(settings, None, 3, 0) == 5  # no metrics: slots less what is in flight
    assert room(settings, idle, 0, 0, job_tokens=300) == 3  # 0.9 x 1000 / 300
    assert room(settings, idle, 0, 0) == 1  # nothing known: one at a time
    half = EngineLoad(2, 0, 0.5, "vllm")
    assert room(settings, half, 2, 0) == 1  # 0.25 a request: one more under 0.9
    assert room(settings, half, 3, 0) == 0  # ... and one is on its way already
    assert room(settings, EngineLoad(2, 1, 0.3, "vllm"), 3, 0) == 0  # it queues: none


def test_room_frees_what_was_answered_since_the_reading() -> None:
    """A request answered after the reading no longer runs: its slot and its share of the
    cache are free again (the worker sent 1, 3, 1, 3 to a 4-sequence engine without it)."""
    from switchyard.broker.config import ServedConfig
    from switchyard.workers.engines.engine_load import EngineLoad, room

    settings = ServedConfig(max_running=4, max_waiting=0, kv_high=0.9)
    one = EngineLoad(1, 0, 0.01, "vllm")
    assert room(settings, one, 0, 0) == 3  # as read: one still running
    assert room(settings, one, 0, 0, done_since=1) == 4  # it was answered since
    half = EngineLoad(2, 0, 0.5, "vllm", capacity=1000)
    assert room(settings, EngineLoad(4, 0, 0.5, "vllm"), 2, 0, done_since=2) == 2
    assert room(settings, half, 1, 0) == 1  # 0.25 a request, two running: one more fits
    assert room(settings, half, 1, 0, done_since=1) == 2  # one left: two more fit
    assert room(settings, half, 0, 0, done_since=5) == 3  # none left: three (never below 0)
