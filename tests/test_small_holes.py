"""Issue 14, point 9: the smaller holes, one test each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys, SwitchyardConfig, ensure_groups
from switchyard.broker.deadletters import list_dead, replay
from switchyard.broker.keys import GROUP
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.workers.watchdog import Watchdog
from tests.conftest import make_config


async def test_the_watchdog_never_deletes_a_consumer_that_holds_entries(
    prefix: str, redis_url: str, aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race: the watchdog saw a consumer with nothing pending and no heartbeat; the
    consumer reads an entry before DELCONSUMER. The entry must stay pending (so a later
    sweep re-queues it), not vanish with the consumer."""
    config = make_config(prefix)
    keys = Keys(prefix).partition("echo", 0)
    stream = keys.stream("standard")
    async with AsyncClient(config, redis_url=redis_url) as client:
        await ensure_groups(aredis, [keys])
        await aredis.xgroup_createconsumer(stream, GROUP, "slow-worker")
        seen: Any = await aredis.xinfo_consumers(stream, GROUP)  # pending 0, as the watchdog saw
        job = await client.embed("echo", "x")
        await aredis.xreadgroup(GROUP, "slow-worker", {stream: ">"})  # read meanwhile
        watchdog = Watchdog(aredis, config)

        async def stale(name: str, group: str) -> Any:
            return seen if name == stream else await real(name, group)

        real = aredis.xinfo_consumers
        monkeypatch.setattr(aredis, "xinfo_consumers", stale)
        await watchdog.sweep()
        monkeypatch.undo()
        pending = await aredis.xpending_range(stream, GROUP, "-", "+", 10)
        assert [p["consumer"] for p in pending] == ["slow-worker"]
        await watchdog.sweep()  # now seen holding it, with no heartbeat: re-queued
        assert await aredis.hget(keys.job(job.id), "stream") == keys.retry("standard")


async def test_replay_keeps_the_reply_stream_tenant_and_owner(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    data = make_config(prefix).model_dump()
    data["tenants"] = {"acme": {}}
    data["watchdog"]["max_attempts"] = 1
    config = SwitchyardConfig.model_validate(data)
    keys = Keys(prefix).partition("echo", 0)
    async with AsyncClient(config, redis_url=redis_url) as client:
        await ensure_groups(aredis, [keys])
        job = await client.embed("echo", "x", tenant="acme")
        await aredis.xreadgroup(GROUP, "ghost", {keys.stream("standard"): ">"})
        await aredis.hset(keys.job(job.id), "state", "running")  # started (what start does)
        await Watchdog(aredis, config).sweep()  # its only attempt's worker is gone
        with pytest.raises(JobFailed):
            await job.result(timeout=5)
        before = await aredis.hmget(keys.job(job.id), ["reply", "tenant", "owner"])
        letters = await list_dead(aredis, [keys])
        assert await replay(Scripts(aredis), letters, 60_000)
        after = await aredis.hmget(keys.job(job.id), ["reply", "tenant", "owner", "state"])
        assert after == [*before, "queued"] and before[2] == "acme"


@pytest.mark.parametrize("bad", [
    {"jobs": {"result_ttl_s": float("inf")}},
    {"jobs": {"idempotency_ttl_s": 1e18}},
    {"jobs": {"deadline_s": {"batch": float("nan")}}},
    {"worker": {"heartbeat_s": 5, "heartbeat_ttl_s": 5}},
    {"watchdog": {"reclaim_idle_s": 1e300}},
])
def test_config_refuses_infinite_and_absurd_times(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SwitchyardConfig.model_validate(bad)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switchyard.ops", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("what", ["binary", "directory"])
def test_a_config_that_is_not_a_text_file_is_one_line(tmp_path: Path, what: str) -> None:
    path = tmp_path / "c.toml"
    if what == "binary":
        path.write_bytes(b"\x00\xff\xfe binary \x80")
    else:
        path.mkdir()
    out = _cli("status", "--config", str(path))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("switchyard: error: ConfigError") and out.stderr.count("\n") == 1


def test_a_metrics_port_out_of_range_is_one_line() -> None:
    out = _cli("worker", "--pool", "echo", "--metrics-port", "99999")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not a port number" in out.stderr


def test_redis_urls_in_errors_hide_their_password() -> None:
    from switchyard.broker.errors import RedisSettingsError
    for url in ("redis://:hunter2@127.0.0.1:badport/0", "redis://user:hunter2@/0",
                "redis://:hunter2@[::1/0"):
        with pytest.raises(RedisSettingsError) as caught:
            RedisSettings.from_url(url)
        assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    out = _cli("status", "--redis-url", "redis://:hunter2@127.0.0.1:1/0")
    assert out.returncode != 0 and "hunter2" not in out.stderr + out.stdout
