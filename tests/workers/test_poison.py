"""Poison against a real Redis and a real worker: malformed entries, a model not routed
to the pool, and a request that crashes the engine every time are each dead-lettered
with their error kept; the jobs behind them, and batched with them, still succeed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from switchyard.broker import GROUP, Keys
from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.keys import JobIdSource
from switchyard.broker.schemas import EmbedRequest, JobEnvelope, ServedBy, now_ms
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.workers.engines.base import Emit, EngineOutput
from switchyard.workers.engines.echo import EchoEngine
from tests.conftest import StartWorker, make_config

pytestmark = pytest.mark.cluster


class CrashesOnPoison(EchoEngine):
    """Echo, except that any batch holding the text 'poison' raises."""

    def __init__(self) -> None:
        super().__init__(delay_ms=50)
        self.calls = 0

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        self.calls += 1
        if any("poison" in getattr(j.request, "input", []) for j in jobs):
            raise RuntimeError("the model fell over")
        return await super().run(jobs, served_by, emit)


def _config(prefix: str) -> SwitchyardConfig:
    base = make_config(prefix, held={"engine": "echo", "max_batch": 16}).model_dump()
    base["watchdog"] = {"max_attempts": 2}
    return type(make_config(prefix)).model_validate(base)


async def test_poison_entries_are_dead_lettered_and_do_not_stop_the_jobs_behind_them(
    prefix: str, redis_url: str, aredis: aioredis.Redis, start_worker: StartWorker,
) -> None:
    config = _config(prefix)
    keys = Keys(prefix).partition("held", 0)
    stream = keys.stream("standard")
    await aredis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    stranger = JobIdSource().new("held", 0)
    wrong_model = JobEnvelope(id=stranger, model="echo", priority="standard",  # echo's model
                              created_ms=now_ms(), request=EmbedRequest(input=["x"]))
    async with AsyncClient(config, redis_url=redis_url) as client:
        await aredis.xadd(stream, {"id": "held.0.bad", "r": keys.reply("x"), "d": "{not json"})
        await aredis.xadd(stream, {"id": stranger, "r": keys.reply("x"),
                                   "d": wrong_model.model_dump_json()})
        poison = await client.embed("held", "poison")
        good = [await client.embed("held", f"ok{i}") for i in range(6)]
        engine = CrashesOnPoison()
        worker = await start_worker(config, "held", engine)
        results = [await job.result(timeout=30) for job in good]
        with pytest.raises(JobFailed) as failed:
            await poison.result(timeout=30)
        after = await (await client.embed("held", "after")).result(timeout=30)
    assert [r.echo for r in results] == [[f"ok{i}"] for i in range(6)]  # type: ignore[union-attr]
    assert after.echo == ["after"]  # type: ignore[union-attr]  # the worker lives on
    assert failed.value.code == "engine_error"
    assert "the model fell over" in failed.value.message
    assert "2 attempts" in failed.value.message
    dead = {f["job"]: f["reason"] for _, f in await aredis.xrange(keys.dead)}
    assert set(dead) == {"held.0.bad", stranger, poison.id}
    assert "invalid job payload" in dead["held.0.bad"]
    assert "routed to other pools" in dead[stranger]
    assert "the model fell over" in dead[poison.id]
    assert worker.stats.dead_lettered == 3
    assert await aredis.xlen(stream) == 0
    assert (await aredis.xpending(stream, GROUP))["pending"] == 0
