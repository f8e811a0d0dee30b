"""Fuzzing (hypothesis) of the boundaries: stream-entry payloads and fields, and the
enqueue API's inputs. Whatever arrives, the answer is a typed Switchyard error or a
valid value, never another exception."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.broker import Keys
from switchyard.broker.errors import EntryDecodeError, SwitchyardError
from switchyard.broker.schemas import JobEnvelope, decode_envelope
from switchyard.broker.streams import StreamEntry, deadline_of
from switchyard.dispatcher import AsyncClient
from switchyard.workers.puller import Puller
from tests.conftest import make_config

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
envelope_like = st.fixed_dictionaries(
    {}, optional={"v": json_values, "id": json_values, "model": json_values,
                  "priority": st.sampled_from(["interactive", "batch", "urgent"]) | json_values,
                  "created_ms": json_values, "deadline_ms": json_values,
                  "attempts": json_values,
                  "request": st.fixed_dictionaries(
                      {}, optional={"kind": st.sampled_from(["embed", "chat"]) | json_values,
                                    "input": json_values, "messages": json_values})})


@given(st.text() | envelope_like.map(json.dumps) | st.binary().map(
    lambda b: b.decode("utf-8", "replace")))
def test_the_decoder_returns_an_envelope_or_raises_entry_decode_error(raw: str) -> None:
    try:
        envelope = decode_envelope(raw)
    except EntryDecodeError as exc:
        assert str(exc).startswith("invalid job payload")
        return
    assert isinstance(envelope, JobEnvelope)
    assert deadline_of(envelope.model_dump_json()) == envelope.deadline_ms


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(st.lists(st.dictionaries(st.sampled_from(["id", "r", "d", "x"]),
                                st.text(max_size=40) | envelope_like.map(json.dumps),
                                max_size=4), max_size=5))
def test_the_puller_buffers_or_rejects_any_entry_without_raising(
    fields: list[dict[str, str]],
) -> None:
    keys = Keys("fz").partition("echo", 0)
    puller = Puller(fakeredis.FakeAsyncRedis(), [keys], "c", max_batch=8,
                    max_batch_tokens=1024, lower_share=0.2, block_ms=10)
    entries = [StreamEntry(keys.stream("standard"), f"{i + 1}-0", f)
               for i, f in enumerate(fields)]
    bad = puller._accept(entries, held=True)
    assert len(bad) + puller.buffered == len(entries)
    assert all(p.error for p in bad)


texts = st.text(max_size=20) | st.lists(st.text(max_size=10), max_size=3) | json_values
numbers = st.none() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=5)
api_calls = st.one_of(
    st.tuples(st.just("embed"), st.fixed_dictionaries(
        {"model": st.sampled_from(["echo", "nope"]) | st.text(max_size=5), "input": texts},
        optional={"priority": st.sampled_from(["interactive", "batch", "high"]) | texts,
                  "deadline_s": numbers, "idempotency_key": st.none() | st.text(max_size=300),
                  "tenant": st.none() | st.text(max_size=140), "max_retries": numbers})),
    st.tuples(st.just("chat"), st.fixed_dictionaries(
        {"model": st.sampled_from(["echo-chat", "echo"]),
         "messages": st.lists(st.fixed_dictionaries(
             {"role": st.sampled_from(["user", "system", "robot"]) | st.text(max_size=5),
              "content": st.text(max_size=20) | json_values}), max_size=3) | json_values},
        optional={"max_tokens": numbers, "temperature": numbers, "top_p": numbers,
                  "stop": st.none() | texts, "seed": numbers, "priority": texts})),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150,
          deadline=None)
@given(call=api_calls)
def test_the_enqueue_api_admits_or_raises_a_typed_error(
    call: tuple[str, dict[str, Any]], redis_url: str, prefix: str,
) -> None:
    async def attempt() -> None:
        async with AsyncClient(make_config(prefix), redis_url=redis_url) as client:
            try:
                job = await getattr(client, call[0])(**call[1])
            except SwitchyardError:
                return
            assert job.id.startswith("echo.0.")

    asyncio.run(attempt())
