"""What the scripts count for the exporter (issue 20), against a real redis-server: each
call's verdicts (one increment per verdict and call, not per job), the jobs offered per
minute and their tokens, the cap in force, the jobs drained; and their typed reading."""

from __future__ import annotations

import redis.asyncio as aioredis

from switchyard.broker import Keys, Scripts, ensure_groups
from switchyard.broker.calls import StreamPolicy, enqueue_call
from switchyard.broker.schemas import PRIORITIES, now_ms
from switchyard.broker.stats import TENANT_REASONS, VERDICTS, StreamCounters, read_counters


def _jobs(keys, ids: list[str], tokens: int) -> list:  # type: ignore[no-untyped-def]
    return [(keys.job(i), None, i, "{}", tokens, 0) for i in ids]


async def _hincrby_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hincrby", {}).get("calls", 0))


async def test_one_call_counts_its_verdicts_once_each_and_its_arrivals(
    aredis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix).partition("p", 0)
    policy = StreamPolicy(keys.stream("standard"), keys.drain("standard"), cap=30,
                          job_ttl_ms=60_000)
    scripts = Scripts(aredis)
    before = await _hincrby_calls(aredis)
    replies = await scripts.call(*enqueue_call(
        policy, keys.reply("c"), _jobs(keys, [f"p.0.{i:04d}" for i in range(50)], 7)))
    assert [r[0] for r in replies] == ["admitted"] * 30 + ["rejected"] * 20
    # Two verdicts, one increment each; the minute's jobs and tokens ride on a write the
    # call makes anyway.
    assert await _hincrby_calls(aredis) - before == 2
    await scripts.call(*enqueue_call(
        policy, keys.reply("c"), _jobs(keys, ["p.0.x1", "p.0.x2"], 5)))
    [counters] = await read_counters(aredis, [keys.drain("standard")], now_ms())
    assert counters.verdicts["admitted", ""] == 30
    assert counters.verdicts["rejected", ""] == 22
    assert counters.verdicts["shed", ""] == 0 and counters.verdicts["tenant", "rps"] == 0
    assert counters.cap is None  # a fixed cap: the config's
    assert sum(m.jobs for m in counters.minutes) == 52
    assert sum(m.tokens for m in counters.minutes) == 50 * 7 + 2 * 5


async def test_duplicates_are_not_arrivals_and_a_sized_cap_is_kept(
    aredis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix).partition("p", 0)
    policy = StreamPolicy(keys.stream("standard"), keys.drain("standard"), cap=1_000,
                          job_ttl_ms=60_000, wait_target_ms=1_000, cap_floor=4,
                          pool_keys=(*keys.queues(), *(keys.drain(p) for p in PRIORITIES)))
    scripts = Scripts(aredis)
    jobs = [(keys.job(i), keys.idempotency(None, "same"), i, "{}", 3, 0)
            for i in ("p.0.a", "p.0.b", "p.0.c")]
    replies = await scripts.call(*enqueue_call(policy, keys.reply("c"), jobs,
                                               idempotency_ttl_ms=60_000))
    assert [r[0] for r in replies] == ["admitted", "duplicate", "duplicate"]
    [counters] = await read_counters(aredis, [keys.drain("standard")], now_ms())
    assert [(m.jobs, m.tokens) for m in counters.minutes] == [(1, 3)]
    assert counters.verdicts["admitted", ""] == 1 and counters.verdicts["duplicate", ""] == 2
    assert counters.cap == 4  # sized: nothing drained yet, so the floor


async def test_complete_counts_the_jobs_drained(aredis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix).partition("p", 0)
    stream = keys.stream("standard")
    scripts = Scripts(aredis)
    await ensure_groups(aredis, [keys])
    await scripts.call(*enqueue_call(
        StreamPolicy(stream, keys.drain("standard"), cap=10, job_ttl_ms=60_000),
        keys.reply("c"), _jobs(keys, ["p.0.a", "p.0.b"], 1)))
    read = await aredis.xreadgroup("workers", "w", {stream: ">"}, count=10)
    entries = [e[0] for e in read[0][1]]
    args: list[object] = ["workers", 60_000, 60_000, 100, 100, "ok", 2, "w"]
    for entry, job in zip(entries, ["p.0.a", "p.0.b"], strict=True):
        args += [entry, job, "succeeded", "{}"]
    await scripts.call("complete", [stream, keys.drain("standard"), keys.dead,
                                    keys.reply("c"), keys.tenant_jobs("-", "standard"),
                                    keys.job("p.0.a"), keys.job("p.0.b")], args)
    [counters] = await read_counters(aredis, [keys.drain("standard")], now_ms())
    assert counters.drained == 2


def test_parse_keeps_the_last_hour_of_minutes_and_every_verdict() -> None:
    now = 1_000 * 60_000 + 30_000  # minute 1000
    raw = {"m0": "960", "a0": "5", "t0": "50",        # 40 minutes ago: kept
           "m1": "940", "a1": "9", "t1": "90",        # 60 minutes ago: gone
           "m2": "1000", "a2": "3", "t2": "30",       # this minute
           "c:admitted": "8", "c:tenant:tpm": "2", "done": "6", "dup": "1",
           "rate": "4.5", "ws": str(now - 1_000), "cap": "12"}
    c = StreamCounters.parse(raw, now)
    assert [(m.minute, m.jobs, m.tokens) for m in c.minutes] == [(960, 5, 50), (1000, 3, 30)]
    assert c.verdicts["admitted", ""] == 8 and c.verdicts["tenant", "tpm"] == 2
    assert {v for v, _ in c.verdicts} == set(VERDICTS)
    assert {r for v, r in c.verdicts if v == "tenant"} == set(TENANT_REASONS)
    assert (c.drained, c.duplicates, c.drain_rate, c.cap) == (6, 1, 4.5, 12)
    idle = StreamCounters.parse({**raw, "ws": str(now - 6_000)}, now)
    assert idle.drain_rate == 0.0  # as the scripts see it: idle for over 5 s
    assert StreamCounters.parse({}, now).cap is None
