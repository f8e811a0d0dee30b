"""Concurrent enqueue from several processes never passes a cap."""

from __future__ import annotations

import json
import subprocess
import sys

import redis

from switchyard.broker import Keys
from tests.conftest import make_config

SCRIPT = """
import asyncio, json, sys
from switchyard.broker import SwitchyardConfig
from switchyard.dispatcher import AsyncClient, AdmissionRejected

async def main():
    config = SwitchyardConfig.model_validate_json(sys.argv[1])
    admitted = rejected = 0
    async with AsyncClient(config, redis_url=sys.argv[2]) as client:
        outcomes = await asyncio.gather(
            *(client.embed("capped", f"x{i}") for i in range(300)), return_exceptions=True)
    for o in outcomes:
        if isinstance(o, AdmissionRejected):
            rejected += 1
        elif isinstance(o, BaseException):
            raise o
        else:
            admitted += 1
    print(json.dumps([admitted, rejected]))

asyncio.run(main())
"""


def test_processes_racing_never_pass_the_cap(
    prefix: str, redis_url: str, sync_redis: redis.Redis
) -> None:
    config = make_config(prefix, capped={"engine": "echo", "caps": {"standard": 500}})
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, config.model_dump_json(), redis_url],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        counts = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert sum(a for a, _ in counts) == 500
    assert sum(r for _, r in counts) == 4 * 300 - 500
    assert sync_redis.xlen(Keys(prefix).partition("capped", 0).stream("standard")) == 500
