"""Attempts count executions, not deliveries (issue 14, point 10), with real worker
processes that die: a job that kills every worker running it is dead-lettered after
``max_attempts`` runs; the jobs its workers held but had not started are not charged."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from switchyard.broker import SwitchyardConfig
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.workers.watchdog import Watchdog
from tests.conftest import make_config

WORKER = """
import asyncio, os, sys
from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.settings import RedisSettings
from switchyard.workers.engines.echo import EchoEngine
from switchyard.workers.runtime import Worker

class DiesOnPoison(EchoEngine):
    async def run(self, jobs, served_by, emit):
        if any("poison" in j.request.input for j in jobs):
            with open(sys.argv[3], "a") as runs:
                runs.write("poison\\n")
            os._exit(9)  # as if the engine crashed the process: no cleanup at all
        return await super().run(jobs, served_by, emit)

async def main():
    config = SwitchyardConfig.model_validate_json(open(sys.argv[2]).read())
    redis = RedisSettings.from_url(sys.argv[1]).connect()
    await Worker(redis, config, "held", DiesOnPoison(delay_ms=20)).run(asyncio.Event())

asyncio.run(main())
"""


def _spawn(folder: Path, redis_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(folder / "worker.py"), redis_url,
                             str(folder / "config.json"), str(folder / "runs.txt")])


@pytest.mark.parametrize("ahead", [0, 2], ids=["read-by-blocking-read", "prefetched"])
async def test_a_job_that_kills_its_workers_is_dead_lettered_and_held_jobs_are_not_charged(
    prefix: str, redis_url: str, aredis: aioredis.Redis, tmp_path: Path, ahead: int,
) -> None:
    """``ahead`` innocent jobs are queued before the poison: with none, a worker's
    blocking read brings the poison (its start overlaps the engine); with two, the
    poison is prefetched and held behind them (it runs once started)."""
    data = make_config(prefix, held={"engine": "echo", "max_batch": 1,
                                     "pack_window": 8}).model_dump()
    data["worker"]["heartbeat_ttl_s"] = 0.6
    data["watchdog"]["max_attempts"] = 3
    config = SwitchyardConfig.model_validate(data)
    (tmp_path / "config.json").write_text(config.model_dump_json())
    (tmp_path / "worker.py").write_text(WORKER)
    runs = tmp_path / "runs.txt"
    watchdog = Watchdog(aredis, config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        innocent = [await client.embed("held", f"ok {i}") for i in range(ahead)]
        poison = await client.embed("held", "poison")
        innocent += [await client.embed("held", f"ok {i}") for i in range(ahead, 6)]
        for _ in range(6):  # workers die on the poison; each time the watchdog re-queues
            worker = _spawn(tmp_path, redis_url)
            try:
                await asyncio.to_thread(worker.wait, 30)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            await asyncio.sleep(0.7)  # its heartbeat lapses
            await watchdog.sweep()
            if await poison.status() == "failed":
                break
        try:
            await poison.result(timeout=5)
            raise AssertionError("the poison job succeeded")
        except JobFailed as failed:
            assert failed.code == "attempts_exhausted"
        assert runs.read_text().count("poison") == 3  # ran exactly max_attempts times
        worker = _spawn(tmp_path, redis_url)
        try:
            results = [await job.result(timeout=30) for job in innocent]
        finally:
            worker.terminate()
            worker.wait(30)
    assert [r.echo for r in results] == [[f"ok {i}"] for i in range(6)]  # type: ignore[union-attr]
    envelopes = [json.loads(f["d"]) for _, f in await aredis.xrange(
        f"{prefix}:{{held.0}}:dead")]
    assert [e["request"]["input"] for e in envelopes] == [["poison"]]
