"""A worker sent SIGTERM in the middle of a 5,000-job burst exits 0 after acking its
in-flight batch, and every job still gets exactly one result once a worker runs again."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis

from switchyard.broker import GROUP, JobOutcome, Keys, load_config
from switchyard.dispatcher import AsyncClient
from switchyard.ops.processes import WorkerProcess

CONFIG = """
[redis]
prefix = "{prefix}"
[worker]
block_ms = 50
heartbeat_s = 0.2
[pools.burst]
engine = "echo"
max_batch = 50
delay_ms = 2
[pools.burst.caps]
standard = 10000
[models.burst]
pool = "burst"
"""


async def test_sigterm_mid_burst_loses_nothing(
    prefix: str, redis_url: str, tmp_path: Path, aredis: aioredis.Redis
) -> None:
    config_path = tmp_path / "c.toml"
    config_path.write_text(CONFIG.format(prefix=prefix))
    config = load_config(config_path, environ={})
    keys = Keys(prefix).partition("burst", 0)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = await asyncio.gather(*(client.embed("burst", f"j{i}") for i in range(5_000)))
        first = WorkerProcess("burst", redis_url, config_path, config)
        await asyncio.to_thread(first.start)
        try:
            while await aredis.xlen(keys.stream("standard")) > 3_500:  # noqa: ASYNC110
                await asyncio.sleep(0.005)  # polling Redis until the burst is midway
            first.signal(signal.SIGTERM)
            code = await asyncio.to_thread(first.wait, 60)
        finally:
            first.stop()
        assert code == 0
        assert (await aredis.xpending(keys.stream("standard"), GROUP))["pending"] == 0
        states = await _states(aredis, [keys.job(job.id) for job in jobs])
        assert 0 < states.count("succeeded") < 5_000
        assert set(states) == {"succeeded", "queued"}  # nothing left half-done

        second = WorkerProcess("burst", redis_url, config_path, config,
                               log=tmp_path / "second.log")
        await asyncio.to_thread(second.start)
        try:
            results = await asyncio.gather(*(job.result(timeout=120) for job in jobs))
        finally:
            assert await asyncio.to_thread(second.stop) == 0
    assert [r.echo for r in results] == [[f"j{i}"] for i in range(5_000)]
    # Exactly one result per job: what reached the caller is what the record holds.
    workers = Counter(r.served_by.worker for r in results if r.served_by)
    assert sum(workers.values()) == 5_000 and len(workers) == 2
    pipe = aredis.pipeline(transaction=False)
    for job in jobs:
        pipe.hget(keys.job(job.id), "outcome")
    stored = [JobOutcome.model_validate_json(raw) for raw in await pipe.execute()]
    assert [o.result for o in stored] == results
    assert await aredis.xlen(keys.stream("standard")) == 0


async def _states(aredis: aioredis.Redis, job_keys: list[str]) -> list[str]:
    pipe = aredis.pipeline(transaction=False)
    for key in job_keys:
        pipe.hget(key, "state")
    return list(await pipe.execute())

