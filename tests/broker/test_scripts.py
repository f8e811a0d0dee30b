"""The Lua scripts against a real redis-server."""

from __future__ import annotations

import redis.asyncio as aioredis

from broker import GROUP, Keys, Scripts, ensure_groups, parse_stream_reply


async def _enqueue(scripts: Scripts, keys, job_id: str, cap: int, idem: str = "") -> list:
    return await scripts.call(  # type: ignore[return-value]
        "enqueue",
        [keys.stream("standard"), keys.job(job_id), keys.idempotency(idem or "-"),
         keys.drain("standard")],
        [job_id, "{}", keys.reply("c"), cap, 60_000, 60_000 if idem else 0],
    )


async def test_enqueue_admits_up_to_the_cap(aredis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix).partition("p", 0)
    scripts = Scripts(aredis)
    verdicts = [(await _enqueue(scripts, keys, f"p.0.{i:04d}", cap=3))[0] for i in range(5)]
    assert verdicts == ["admitted"] * 3 + ["rejected"] * 2
    assert await aredis.xlen(keys.stream("standard")) == 3


async def test_idempotency_key_returns_the_first_job(aredis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix).partition("p", 0)
    scripts = Scripts(aredis)
    first = await _enqueue(scripts, keys, "p.0.aaaa", cap=10, idem="k1")
    again = await _enqueue(scripts, keys, "p.0.bbbb", cap=10, idem="k1")
    assert first[0] == "admitted" and again == ["duplicate", "p.0.aaaa"]
    assert await aredis.xlen(keys.stream("standard")) == 1


async def test_complete_first_result_wins_and_acks(aredis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix).partition("p", 0)
    scripts = Scripts(aredis)
    await ensure_groups(aredis, [keys])
    await ensure_groups(aredis, [keys])  # idempotent
    await _enqueue(scripts, keys, "p.0.cccc", cap=10)
    entry = parse_stream_reply(await aredis.xreadgroup(
        GROUP, "w", {keys.stream("standard"): ">"}, count=1))[0]

    async def complete(outcome: str) -> object:
        return await scripts.call(
            "complete",
            [entry.stream, keys.job("p.0.cccc"), keys.reply("c"), keys.drain("standard"),
             keys.dead],
            [GROUP, entry.entry_id, "p.0.cccc", "succeeded", outcome, 60_000, 60_000, 1000,
             "", "", 1000])

    assert await complete('{"first": 1}') == 1
    assert await complete('{"second": 1}') == 0
    assert await aredis.hget(keys.job("p.0.cccc"), "outcome") == '{"first": 1}'
    assert await aredis.xlen(keys.reply("c")) == 1
    assert await aredis.xlen(keys.stream("standard")) == 0
    assert (await aredis.xpending(keys.stream("standard"), GROUP))["pending"] == 0
    assert 0 < await aredis.pttl(keys.job("p.0.cccc")) <= 60_000


async def test_pipeline_reloads_scripts_after_a_flush(aredis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix).partition("p", 0)
    scripts = Scripts(aredis)
    await scripts.load()
    await aredis.script_flush()
    calls = [("enqueue", [keys.stream("batch"), keys.job(f"p.0.{i}"), keys.idempotency("-"),
                          keys.drain("batch")],
              [f"p.0.{i}", "{}", keys.reply("c"), 10, 60_000, 0]) for i in range(3)]
    replies = await scripts.pipeline(calls)  # type: ignore[arg-type]
    assert [r[0] for r in replies] == ["admitted"] * 3  # type: ignore[index]
