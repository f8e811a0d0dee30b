"""The planner's first guess (Erlang C) and its live advice: `switchyard plan --live`
against echo workers of a known speed recommends more workers when more load is offered;
the exporter serves the same advice for the last full minute."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from switchyard.broker.config import load_config
from switchyard.broker.stats import Minute, StreamCounters
from switchyard.dispatcher.client import AsyncClient
from switchyard.ops.exporter import Snapshot, _recommended
from switchyard.ops.plan import advise, erlang_c, workers_for
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.status import PoolStatus, StreamStatus
from tests.conftest import FAST_TOML


def test_erlang_c_matches_the_textbook() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: the utilisation
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(10, 8.0) == pytest.approx(0.409, abs=0.001)
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 0.0) == 0.0


@given(st.floats(0.1, 500), st.floats(1, 100), st.sampled_from([0.1, 0.5, 2.0]))
def test_the_advice_meets_its_target_with_the_fewest_workers(rate: float, capacity: float,
                                                             target: float) -> None:
    n = workers_for(rate, capacity, target, 0.99)
    assert n * capacity > rate  # never fewer than the load itself

    def late(c: int) -> float:
        return erlang_c(c, rate / capacity) * 2.718281828459045 ** (
            -(c * capacity - rate) * target)
    assert late(n) <= 0.01
    assert n - 1 <= rate / capacity or late(n - 1) > 0.01  # one fewer would miss it
    assert workers_for(rate * 2, capacity, target, 0.99) >= n


def test_the_exporter_advises_from_the_last_full_minute() -> None:
    config = load_config(None)
    now = 1_000 * 60_000 + 5_000
    counters = {("echo", 0, "standard"): StreamCounters(minutes=(Minute(999, 1_200, 0),))}
    workers = [{"consumer": f"w{i}", "capacity": "5.0"} for i in range(2)]
    pools = [PoolStatus("echo", "echo", [StreamStatus(0, "standard", 0, 0, None)], 0, workers)]
    snapshot = Snapshot(pools, counters, {}, {}, {}, {}, now)
    [sample] = _recommended(snapshot, config).samples
    assert sample.labels == {"pool": "echo"}
    assert sample.value == workers_for(20.0, 5.0, 1.0, 0.99) >= 5  # 1,200 jobs a minute


CONFIG = FAST_TOML + """
[pools.echo]
engine = "echo"
max_batch = 1
delay_ms = 20
[models.echo]
pool = "echo"
"""


async def _offer(client: AsyncClient, rate: float, seconds: float) -> None:
    """Embeds at ``rate`` a second for ``seconds`` (not waiting for their results)."""
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            await client.embed("echo", "x")
        sent += max(due, 0)
        await asyncio.sleep(0.01)


async def test_live_advice_follows_the_offered_load(tmp_path: Path, redis_url: str,
                                                    prefix: str, aredis: aioredis.Redis
                                                    ) -> None:
    path = tmp_path / "switchyard.toml"
    path.write_text(CONFIG.format(prefix=prefix))
    config = load_config(path)
    with WorkerProcess("echo", redis_url, path, config):
        async with AsyncClient(config, redis_url=redis_url) as client:
            await _offer(client, 20, 2)  # (the worker measures its speed)

            async def at(rate: float) -> int:
                load = asyncio.create_task(_offer(client, rate, 3.5))
                [advice] = await advise(aredis, config, 3.0)
                await load
                assert advice.capacity_per_worker is not None
                assert 10 < advice.capacity_per_worker < 60  # 20 ms a job: at most 50/s
                assert advice.offered_per_s == pytest.approx(rate, rel=0.35)
                return advice.recommended
            light, heavy = await at(8), await at(120)
        assert 1 <= light < heavy and heavy >= 3
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "switchyard.ops", "plan", "--live", "--window", "1",
             "--json", "--config", str(path), "--redis-url", redis_url],
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0]["pool"] == "echo"
        # the last hour as counted, planned (the echo pool's curve from its delays)
        planned = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "switchyard.ops", "plan", "--from-redis", "--seconds", "20",
             "--config", str(path), "--redis-url", redis_url, "--out", str(tmp_path / "p"),
             "--write-workload", str(tmp_path / "measured.toml")],
            capture_output=True, text=True, timeout=120, check=False)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert "pool echo (echo, nominal profile" in planned.stdout
        assert "spent so far (Redis)" in planned.stdout
        measured = tomllib.loads((tmp_path / "measured.toml").read_text())
        [standard] = measured["traffic"]
        assert standard["priority"] == "standard" and standard["rate"] > 1
