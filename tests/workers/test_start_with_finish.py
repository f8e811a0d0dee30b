"""A batch the engine answered before its ``start`` went out (issue 15): the worker sends
``start`` and ``complete`` in one round trip. Jobs ``start`` finds ended (cancelled) keep
their outcome and are not counted as duplicate results; the others end as if started
alone first."""

from __future__ import annotations

import redis.asyncio as aioredis

from switchyard.broker.keys import Keys
from switchyard.broker.schemas import EmbedResult, ServedBy, Usage
from switchyard.broker.scripts import Scripts
from switchyard.dispatcher import AsyncClient, JobCancelled
from switchyard.workers.ledger import Ledger, outcomes
from switchyard.workers.puller import Puller
from tests.conftest import make_config


async def test_start_and_complete_in_one_round_trip(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config = make_config(prefix)
    keys = Keys(prefix).partition("echo", 0)
    async with AsyncClient(config, redis_url=redis_url) as client:
        kept, cancelled = await client.embed("echo", "kept"), await client.embed("echo", "gone")
        scripts = Scripts(aredis)
        for stream in keys.streams():
            await aredis.xgroup_create(stream, "workers", id="0", mkstream=True)
        puller = Puller.for_pool(aredis, config, "echo", [keys], "w1", scripts)
        assert await puller.fill() == []
        run = puller.take(lambda envelope: (1, 1))
        assert [p.entry.job_id for p in run] == [kept.id, cancelled.id]
        assert await cancelled.cancel() is True  # read, not started: then cancelled
        served = ServedBy(worker="w1", pool="echo", engine="echo", device="none")
        outputs = [EmbedResult.built(kind="embed", vectors=[[]], dimensions=0,
                                     usage=Usage.built(input_tokens=1, output_tokens=0),
                                     echo=[p.envelope.request.input[0]],  # type: ignore[union-attr]
                                     served_by=served, cost_usd=None) for p in run]
        items, _ = outcomes(run, outputs)
        finished = await Ledger(scripts, config, "w1").finish(items, start=run)
        await puller.aclose()
        assert [finished.started[id(p)] for p in run] == ["run", "skip"]
        assert finished.written == 1 and finished.dropped == ()  # skip acked it: no result
        assert (await kept.result(timeout=5)).echo == ["kept"]  # type: ignore[union-attr]
        assert await aredis.hget(keys.job(kept.id), "worker") == "w1"  # started, then done
        try:
            await cancelled.result(timeout=5)
            raise AssertionError("a cancelled job got a result")
        except JobCancelled:
            pass
        assert await aredis.xpending(keys.stream("standard"), "workers") == {
            "pending": 0, "min": None, "max": None, "consumers": []}
