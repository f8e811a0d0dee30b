"""The sync client's fast path (issue 15): ``embed`` and ``chat`` send a plain admission
from the calling thread, on that thread's own connection, and answer exactly as the async
path would: the same handles, rejections, duplicates and typed failures."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from switchyard.broker import BrokerUnavailable, SwitchyardConfig, load_config
from switchyard.dispatcher import AdmissionRejected, Client, InvalidRequest
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.redis_server import RedisServer
from tests.conftest import OWN_PASSWORD, make_config


def _counting_async_path(client: Client) -> list[str]:
    """Record every submission that goes to the event loop (the async path)."""
    seen: list[str] = []
    inner = client._client.submit

    async def submit(job: Any, kind: Any, max_retries: Any) -> Any:
        seen.append(job.model)
        return await inner(job, kind, max_retries)

    client._client.submit = submit  # type: ignore[method-assign]
    return seen


def _waiters(client: Client) -> int:
    """Jobs whose replies the client waits for (registered, or queued for its reader)."""
    async def count() -> int:
        replies = client._client.replies
        return len(replies._waiters) + len(replies._incoming)
    return client._portal.call(count())


@pytest.fixture
def worker_config(prefix: str, tmp_path: Path) -> tuple[Path, SwitchyardConfig]:
    path = tmp_path / "config.toml"
    path.write_text(f'[redis]\nprefix = "{prefix}"\n[pools.echo]\nengine = "echo"\n'
                    '[models.echo]\npool = "echo"\n'
                    '[models.echo-chat]\npool = "echo"\nkind = "chat"\n')
    return path, load_config(path, environ={})


def test_sync_calls_skip_the_loop_and_every_result_arrives(
    redis_url: str, worker_config: tuple[Path, SwitchyardConfig],
) -> None:
    path, config = worker_config
    with WorkerProcess("echo", redis_url, path, config), \
            Client(config, redis_url=redis_url) as client:
        async_path = _counting_async_path(client)
        client.embed("echo", "first")  # checks the server once, on the async path
        jobs = [client.embed("echo", f"text {i}") for i in range(300)]
        results = [job.result(timeout=30).echo for job in jobs]
        stream = client.chat("echo-chat", [{"role": "user", "content": "a b c"}], stream=True)
        assert "".join(stream) == "a b c"
    assert results == [[f"text {i}"] for i in range(300)]
    assert async_path == ["echo"]


def test_sync_calls_do_not_wake_the_loop_thread(
    redis_url: str, worker_config: tuple[Path, SwitchyardConfig],
) -> None:
    """Once the reader reads the client's reply stream, a sync call queues its waiter for
    the reader instead of scheduling it on the loop: no wake-up of the loop's thread a
    call (a fifth of the sync client's CPU, issue 15), and still every result arrives."""
    path, config = worker_config
    with WorkerProcess("echo", redis_url, path, config), \
            Client(config, redis_url=redis_url) as client:
        client.embed("echo", "first").result(timeout=30)
        loop = client._portal.loop
        scheduled: list[object] = []
        schedule = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
            scheduled.append(callback)
            return schedule(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        jobs = [client.embed("echo", f"text {i}") for i in range(200)]
        woken = len(scheduled)
        loop.call_soon_threadsafe = schedule  # type: ignore[method-assign]
        results = [job.result(timeout=30).echo for job in jobs]
        assert _waiters(client) == 0
    assert woken == 0, scheduled[:3]
    assert results == [[f"text {i}"] for i in range(200)]


def test_threads_each_send_on_their_own_connection(
    redis_url: str, worker_config: tuple[Path, SwitchyardConfig],
) -> None:
    path, config = worker_config
    results: dict[int, list[list[str]]] = {}
    with WorkerProcess("echo", redis_url, path, config), \
            Client(config, redis_url=redis_url) as client:
        client.embed("echo", "warm")

        def lane(n: int) -> None:
            jobs = [client.embed("echo", f"{n}:{i}") for i in range(40)]
            results[n] = [job.result(timeout=30).echo for job in jobs]

        threads = [threading.Thread(target=lane, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(client._direct._opened) == 6
        assert _waiters(client) == 0
    assert results == {n: [[f"{n}:{i}"] for i in range(40)] for n in range(6)}


def test_a_rejection_a_duplicate_and_bad_input_answer_as_the_async_path(
    prefix: str, redis_url: str,
) -> None:
    config = make_config(prefix, capped={"engine": "echo", "caps": {"standard": 2}})
    with Client(config, redis_url=redis_url) as client:
        first = client.embed("capped", "a", idempotency_key="k1")
        async_path = _counting_async_path(client)
        client.embed("capped", "b")
        with pytest.raises(AdmissionRejected) as rejected:
            client.embed("capped", "c")
        assert (rejected.value.reason, rejected.value.depth, rejected.value.cap) == (
            "pool_full", 2, 2)
        assert async_path == []  # no retries asked for: answered without the loop
        assert client.embed("capped", "again", idempotency_key="k1").id == first.id
        assert async_path == ["capped"]  # a duplicate: the async path finds the job
        with pytest.raises(InvalidRequest):
            client.embed("capped", "\ud800")
        assert _waiters(client) == 2  # the two admitted jobs; none for the refused ones


def test_a_server_that_lost_its_scripts_is_sent_them_again(
    prefix: str, redis_url: str,
) -> None:
    config = make_config(prefix)
    with Client(config, redis_url=redis_url) as client:
        client.embed("echo", "first")
        redis.Redis.from_url(redis_url).script_flush()  # as after a restart (our server)
        job = client.embed("echo", "after the flush")
        assert job.status().value == "queued"


@pytest.mark.parametrize("fault", ["down", "silent"])
def test_redis_down_or_silent_fails_typed_within_the_timeout(
    prefix: str, own_redis: RedisServer, fault: str,
) -> None:
    data = make_config(prefix).model_dump()
    data["redis"]["timeout_s"] = 0.5
    config = SwitchyardConfig.model_validate(data)
    with Client(config, redis_url=own_redis.url) as client:
        client.embed("echo", "x")
        assert own_redis.process is not None
        if fault == "down":
            own_redis.stop()
        else:
            os.kill(own_redis.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as failed:
            client.embed("echo", "y")
        assert time.monotonic() - started < 2.0  # timeout_s (0.5) plus slack
        assert OWN_PASSWORD not in str(failed.value)
        if fault == "silent":
            os.kill(own_redis.process.pid, signal.SIGCONT)
