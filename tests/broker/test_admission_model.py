"""The planner's admission model (``broker/admission_model.py``) against the real
``enqueue.lua`` on a real redis-server: the same state, the same call, the same verdict
for every job (hypothesis draws the state: depths, drain and admission windows, the
oldest undelivered entry, caps, wait targets, spill, shedding and the age gate)."""

from __future__ import annotations

from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.broker.admission_model import AdmissionArgs, Drain, Stream, admit
from switchyard.broker.calls import StreamPolicy, enqueue_call
from switchyard.broker.keys import Keys, PartitionKeys
from switchyard.broker.schemas import PRIORITIES
from switchyard.broker.scripts import source

AGO = st.integers(0, 7_000)
"""How long ago a window began (ms): across the 100 ms and 5 s edges."""


@st.composite
def drains(draw: st.DrawFn) -> dict[str, Any]:
    """A drain hash's fields as offsets from now (``ws``/``aws``: ms ago)."""
    return {"rate": draw(st.none() | st.floats(0, 60, allow_nan=False).map(lambda x: round(x, 3))),
            "ws": draw(st.none() | AGO), "n": draw(st.integers(0, 40)),
            "arate": draw(st.none() | st.floats(0, 60).map(lambda x: round(x, 3))),
            "aws": draw(st.none() | AGO), "an": draw(st.integers(0, 40))}


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    wait = draw(st.sampled_from([0, 0, 200, 1_000, 3_000]))
    streams = []
    for _ in PRIORITIES:
        delivered = draw(st.integers(0, 12))
        waiting = draw(st.integers(0, 12))
        streams.append({"delivered": delivered, "waiting": waiting,
                        "head_ago": draw(st.integers(0, 6_000)), "drain": draw(drains())})
    return {
        "mine": draw(st.integers(0, 2)), "streams": streams, "jobs": draw(st.integers(1, 6)),
        "args": AdmissionArgs(
            cap=draw(st.integers(0, 30)), spill_ms=draw(st.sampled_from([0, 300, 2_000])),
            wait_target_ms=wait, cap_floor=draw(st.integers(0, 8)),
            shed_ms=draw(st.sampled_from([0, 0, 500, 3_000])),
            age_gate_ms=draw(st.sampled_from([0, 400, 1_500])) if wait else 0),
        "above_ago": draw(st.none() | st.integers(0, 3_000)),
        "seen_ago": draw(st.integers(0, 3_000)),
    }


def _now(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def _build(r: redis.Redis, keys: PartitionKeys, case: dict[str, Any], now: int
           ) -> list[Stream]:
    """Write the drawn state into Redis (times relative to ``now``); the model's view."""
    model = []
    for i, (p, s) in enumerate(zip(PRIORITIES, case["streams"], strict=True)):
        stream, n = keys.stream(p), s["delivered"] + s["waiting"]
        head = now - s["head_ago"]
        # delivered entries before the head, in id order; undelivered from the head on
        for j in range(n):
            ms = head - 10 * (s["delivered"] - j) if j < s["delivered"] else head + (
                j - s["delivered"])
            r.xadd(stream, {"id": "x"}, id=f"{max(1, ms)}-{j + 1}")
        r.xgroup_create(stream, "workers", id="0", mkstream=True)
        if s["delivered"]:
            r.xreadgroup("workers", "w", {stream: ">"}, count=s["delivered"])
        d = s["drain"]
        fields: dict[str, Any] = {"n": d["n"], "an": d["an"]}
        for name in ("rate", "arate"):
            if d[name] is not None:
                fields[name] = repr(d[name])
        for name in ("ws", "aws"):
            if d[name] is not None:
                fields[name] = now - d[name]
        drain = Drain(rate=d["rate"], ws=fields.get("ws"), n=d["n"], arate=d["arate"],
                      aws=fields.get("aws"), an=d["an"])
        if i == case["mine"] and case["above_ago"] is not None:
            fields |= {"above": now - case["above_ago"], "seen": now - case["seen_ago"]}
            drain = drain._replace(above=fields["above"], seen=fields["seen"])
        r.hset(keys.drain(p), mapping=fields)
        model.append(Stream(n, max(1, head) if s["waiting"] else None, drain))
    return model


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_the_model_gives_the_scripts_verdicts(case: dict[str, Any], sync_redis: redis.Redis,
                                               prefix: str) -> None:
    keys = Keys(prefix).partition("m", 0)
    r = sync_redis
    r.delete(*(k for p in PRIORITIES for k in (keys.stream(p), keys.drain(p))))
    streams = _build(r, keys, case, _now(r))
    args, mine = case["args"], case["mine"]
    policy = StreamPolicy(
        keys.stream(PRIORITIES[mine]), keys.drain(PRIORITIES[mine]), cap=args.cap,
        job_ttl_ms=60_000, wait_target_ms=args.wait_target_ms, cap_floor=args.cap_floor,
        shed_ms=args.shed_ms, age_gate_ms=args.age_gate_ms,
        pool_keys=(*keys.queues(), *(keys.drain(p) for p in PRIORITIES)))
    ids = [f"m.0.{i:04d}" for i in range(case["jobs"])]
    name, call_keys, argv = enqueue_call(policy, keys.reply("c"),
                                         [(keys.job(i), None, i, "{}", 0, 0) for i in ids],
                                         spill_ms=args.spill_ms)
    sha = r.script_load(source(name, shebang=False))
    before = _now(r)
    replies = r.evalsha(sha, len(call_keys), *call_keys, *argv)
    after = _now(r)
    got = tuple(str(reply[0]) for reply in replies)
    # The script reads the clock itself: the model at every ms the call may have run in.
    three = (streams[0], streams[1], streams[2])
    modelled = AdmissionArgs.of(policy, args.spill_ms)  # (the model's view of the policy)
    assert modelled == args
    predicted = {tuple(admit(three, mine, modelled, case["jobs"], t)[0])
                 for t in range(before, after + 1)}
    assert got in predicted, (got, predicted)


def test_a_priority_fed_below_its_share_is_admitted_at_half_load(
        sync_redis: redis.Redis, prefix: str) -> None:
    """Issue 21's bench found this: interactive and standard drain 15 jobs/s each with 8
    interactive jobs in flight; batch is sent 0.8/s, so it drains 0.8/s. With less than a
    second of the pool's drain ahead the pool is keeping up, yet the prediction divided
    what was ahead by batch's own rate (10 s, past a 10 s deadline's 3 s share) and
    refused it as deadline_unmeetable: a quarter of a mix at half load."""
    keys = Keys(prefix).partition("m", 0)
    r = sync_redis
    recent = {"ago": 300}
    state = {
        "mine": 2, "jobs": 1, "above_ago": None, "seen_ago": 0,
        "args": AdmissionArgs(cap=1_000, spill_ms=3_000),
        "streams": [
            {"delivered": 8, "waiting": 0, "head_ago": 0,
             "drain": {"rate": 15.0, "ws": recent["ago"], "n": 0, "arate": 15.0,
                       "aws": 100, "an": 0}},
            {"delivered": 0, "waiting": 0, "head_ago": 0,
             "drain": {"rate": 15.0, "ws": recent["ago"], "n": 0, "arate": 15.0,
                       "aws": 100, "an": 0}},
            {"delivered": 0, "waiting": 0, "head_ago": 0,
             "drain": {"rate": 0.8, "ws": recent["ago"], "n": 0, "arate": None,
                       "aws": None, "an": 0}}]}
    streams = _build(r, keys, state, _now(r))
    policy = StreamPolicy(keys.stream("batch"), keys.drain("batch"), cap=1_000,
                          job_ttl_ms=60_000,
                          pool_keys=(*keys.queues(), *(keys.drain(p) for p in PRIORITIES)))
    name, call_keys, argv = enqueue_call(policy, keys.reply("c"),
                                         [(keys.job("m.0.1"), None, "m.0.1", "{}", 0, 0)],
                                         spill_ms=3_000)
    [reply] = r.evalsha(r.script_load(source(name, shebang=False)), len(call_keys),
                        *call_keys, *argv)
    assert reply[0] == "admitted"
    verdicts, _ = admit((streams[0], streams[1], streams[2]), 2, state["args"], 1, _now(r))
    assert verdicts == ["admitted"]
