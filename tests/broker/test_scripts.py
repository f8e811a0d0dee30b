"""The Lua scripts against a real redis-server."""

from __future__ import annotations

import redis.asyncio as aioredis

from switchyard.broker import GROUP, Keys, Scripts, ensure_groups, parse_stream_reply
from switchyard.broker.calls import StreamPolicy, enqueue_call
from switchyard.broker.keys import PartitionKeys
from switchyard.broker.schemas import PRIORITIES


def _policy(keys: PartitionKeys, cap: int) -> StreamPolicy:
    return StreamPolicy(keys.stream("standard"), keys.drain("standard"), cap=cap,
                        job_ttl_ms=60_000)


async def _enqueue(scripts: Scripts, keys, job_id: str, cap: int, idem: str = "") -> list:
    replies = await scripts.call(*enqueue_call(
        _policy(keys, cap), keys.reply("c"),
        [(keys.job(job_id), keys.idempotency(None, idem) if idem else None, job_id, "{}", 0, 0)],
        idempotency_ttl_ms=60_000 if idem else 0))
    assert isinstance(replies, list) and len(replies) == 1
    return replies[0]  # type: ignore[no-any-return]


async def test_one_call_admits_many_jobs_in_order(aredis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix).partition("p", 0)
    ids = [f"p.0.{i:04d}" for i in range(5)]
    replies = await Scripts(aredis).call(*enqueue_call(
        _policy(keys, 3), keys.reply("c"),
        [(keys.job(i), keys.idempotency(None, "same"), i, "{}", 0, 0) for i in ids],
        idempotency_ttl_ms=60_000))
    assert isinstance(replies, list)
    # The first job takes the key; the rest are duplicates of it, not second jobs.
    assert [r[0] for r in replies] == ["admitted"] + ["duplicate"] * 4
    assert await aredis.xlen(keys.stream("standard")) == 1


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

    async def complete(outcome: str, worker: str = "w") -> object:
        return await scripts.call(
            "complete",
            [entry.stream, keys.drain("standard"), keys.dead, keys.reply("c"),
             keys.tenant_jobs("-", "standard"), keys.job("p.0.cccc")],
            [GROUP, 60_000, 60_000, 1000, 1000, "ok", 1, worker,
             entry.entry_id, "p.0.cccc", "succeeded", outcome])

    assert await complete('{"first": 1}') == [1]
    assert await complete('{"first": 1}') == [0]  # the same call retried: not a duplicate
    assert await complete('{"second": 1}', "w2") == [2]  # a duplicate execution: counted
    assert await aredis.hget(keys.job("p.0.cccc"), "outcome") == '{"first": 1}'
    assert await aredis.hget(keys.drain("standard"), "dup") == "1"
    assert await aredis.xlen(keys.reply("c")) == 1
    assert await aredis.xlen(keys.stream("standard")) == 0
    assert (await aredis.xpending(keys.stream("standard"), GROUP))["pending"] == 0
    assert 0 < await aredis.pttl(keys.job("p.0.cccc")) <= 60_000


async def test_pipeline_reloads_scripts_after_a_flush(aredis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix).partition("p", 0)
    scripts = Scripts(aredis)
    await scripts.load()
    await aredis.script_flush()
    calls = [enqueue_call(_policy(keys, 10), keys.reply("c"),
                          [(keys.job(f"p.0.{i}"), None, f"p.0.{i}", "{}", 0, 0)])
             for i in range(3)]
    replies = await scripts.pipeline(calls)
    assert [r[0][0] for r in replies] == ["admitted"] * 3  # type: ignore[index]


async def test_spill_forward_moves_only_undelivered_queued_jobs(
    aredis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix).partition("p", 0)
    scripts = Scripts(aredis)
    await ensure_groups(aredis, [keys])
    ids = ["p.0.a1", "p.0.b2"]
    entries = [(await _enqueue(scripts, keys, job_id, 10))[2] for job_id in ids]
    await aredis.xreadgroup(GROUP, "w", {keys.stream("standard"): ">"}, count=1)  # takes a1
    args: list = [GROUP, 60_000, 1000]
    script_keys = [keys.stream("standard")]
    for job_id, entry in zip(ids, entries, strict=True):
        script_keys += [keys.job(job_id), keys.reply("c"), keys.tenant_jobs("-", "standard")]
        args += [entry, job_id, f"q.0.copy-{job_id}", "elsewhere:reply:c"]
    verdicts = await scripts.call("spill_forward", script_keys, args)
    assert verdicts == ["kept", "forwarded"]
    assert await aredis.hget(keys.job("p.0.b2"), "state") == "forwarded"
    assert await aredis.hget(keys.job("p.0.b2"), "forward") == "q.0.copy-p.0.b2"
    assert await aredis.hget(keys.job("p.0.a1"), "state") == "queued"
    assert await aredis.xlen(keys.stream("standard")) == 1  # only the delivered one left
    notice = parse_stream_reply(await aredis.xread({keys.reply("c"): "0-0"}))
    assert [(n.job_id, n.fields["fwd"], n.fields["fr"]) for n in notice] == [
        ("p.0.b2", "q.0.copy-p.0.b2", "elsewhere:reply:c")]


async def test_caps_follow_the_measured_drain_rate(aredis: aioredis.Redis, prefix: str) -> None:
    from switchyard.broker.schemas import now_ms

    keys = Keys(prefix).partition("p", 0)
    scripts = Scripts(aredis)

    policy = StreamPolicy(keys.stream("standard"), keys.drain("standard"), cap=1_000,
                          job_ttl_ms=60_000, wait_target_ms=1_000, cap_floor=2,
                          pool_keys=(*keys.queues(), *(keys.drain(p) for p in PRIORITIES)))

    async def one(job_id: str) -> list[object]:
        reply = await scripts.call(*enqueue_call(
            policy, keys.reply("c"), [(keys.job(job_id), None, job_id, "{}", 0, 0)]))
        return reply[0]  # type: ignore[index,no-any-return]

    async def admit(n: int, start: int) -> list[object]:
        return [(await one(f"p.0.{i}"))[0] for i in range(start, start + n)]

    await aredis.hset(keys.drain("standard"), mapping={"rate": "10", "ws": now_ms()})
    assert await admit(11, 0) == ["admitted"] * 10 + ["rejected"]  # 10/s x 1 s
    await aredis.hset(keys.drain("standard"), mapping={"rate": "25", "ws": now_ms()})
    assert await admit(16, 11) == ["admitted"] * 15 + ["rejected"]  # now 25
    rejected = await one("p.0.x")
    assert rejected[6] == 25  # (the cap in force, for Retry-After)
    await aredis.hset(keys.drain("standard"), mapping={"ws": now_ms() - 60_000})
    await aredis.delete(keys.stream("standard"))
    assert await admit(3, 100) == ["admitted", "admitted", "rejected"]  # stale: the floor
    # A stream given little work could take the time of the priorities below it: its cap
    # is sized from what the pool drains less what higher priorities take.
    for priority, rate in (("interactive", 30), ("standard", 5), ("batch", 40)):
        await aredis.hset(keys.drain(priority), mapping={"rate": str(rate), "ws": now_ms()})
    await aredis.delete(keys.stream("standard"))
    assert await admit(46, 200) == ["admitted"] * 45 + ["rejected"]  # (30+5+40 - 30) x 1 s
