"""`switchyard dlq list|replay|purge` against a real Redis: a job that used up its
attempts is listed, replayed under its id and then succeeds; an undecodable dead letter
is refused for replay and purged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from switchyard.broker import GROUP, Keys, ensure_groups, load_config
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.ops.cli import main
from switchyard.workers.watchdog import Watchdog
from tests.conftest import StartWorker

pytestmark = pytest.mark.cluster


async def _dlq(argv: list[str]) -> int:
    """The command, as a user runs it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(main, argv)


CONFIG = """
[redis]
url = "{url}"
prefix = "{prefix}"
[worker]
block_ms = 50
heartbeat_s = 0.2
[watchdog]
max_attempts = 1
[pools.held]
engine = "echo"
[models.held]
pool = "held"
"""


async def test_dead_letters_are_listed_replayed_and_purged(
    tmp_path: Path, redis_url: str, prefix: str, aredis: aioredis.Redis,
    start_worker: StartWorker, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(url=redis_url, prefix=prefix))
    config = load_config(path, environ={})
    keys = Keys(prefix).partition("held", 0)
    await ensure_groups(aredis, [keys])
    await aredis.xadd(keys.dead, {"source": keys.stream("standard"), "job": "held.0.junk",
                                  "reason": "invalid job payload", "d": "{junk"})
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.embed("held", "again", deadline_s=0.5)
        await aredis.xreadgroup(GROUP, "ghost", {keys.stream("standard"): ">"})
        await aredis.hset(keys.job(job.id), "state", "running")  # started (what start does)
        await Watchdog(aredis, config).sweep()  # its only attempt's worker is gone
        with pytest.raises(JobFailed):
            await job.result(timeout=5)

        assert await _dlq(["dlq", "list", "--json", "--config", str(path)]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [d["job"] for d in listed] == ["held.0.junk", job.id]
        junk, ours = (d["ref"] for d in listed)

        assert await _dlq(["dlq", "replay", junk, ours, "--config", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"{junk}: not replayable" in out and f"{ours}: replayed as" in out
        await start_worker(config, "held")  # the replay has a fresh deadline: it runs
        result = await client.job(job.id).result(timeout=30)
    assert result.echo == ["again"]  # type: ignore[union-attr]

    assert await _dlq(["dlq", "purge", "--all", "--pool", "held", "--config", str(path)]) == 0
    assert "purged 1 dead letters" in capsys.readouterr().out
    assert await aredis.xlen(keys.dead) == 0
    assert await _dlq(["dlq", "purge", "--config", str(path)]) == 1  # names nothing: refused
    assert "ConfigError: dlq purge: name dead letters" in capsys.readouterr().err
