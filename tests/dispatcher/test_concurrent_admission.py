"""Concurrent enqueue from several processes never passes a cap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from switchyard.broker import Keys
from switchyard.dispatcher import AsyncClient
from tests.conftest import make_config

pytestmark = pytest.mark.cluster

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


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_back_to_back_submissions_are_never_stranded(
    prefix: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, in_flight: int,
) -> None:
    """A round trip that has just found the queue empty is done, though it has not yet
    left the submitter's set of round trips: a submission made right then must still go
    out (it used to wait for Redis's timeout, then fail BrokerUnavailable)."""
    from switchyard.broker import SwitchyardConfig
    from switchyard.dispatcher import submitter
    monkeypatch.setattr(submitter, "IN_FLIGHT", in_flight)
    data = make_config(prefix).model_dump()
    data["redis"]["timeout_s"] = 1.0
    async with AsyncClient(SwitchyardConfig.model_validate(data), redis_url=redis_url) as client:
        for i in range(200):
            await client.embed("echo", f"t{i}")
