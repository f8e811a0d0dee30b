"""``built`` (issue 15): the hot paths' model constructor gives the very model that
validation gives, dumps the same JSON, and refuses a call that leaves a field out."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchyard.broker.errors import EntryDecodeError
from switchyard.broker.schemas import (
    EmbedRequest,
    EmbedResult,
    JobEnvelope,
    JobOutcome,
    JobState,
    ServedBy,
    Usage,
    decode_envelope,
)

texts = st.lists(st.text(max_size=20), min_size=1, max_size=4)


@given(texts, st.integers(0, 2**40), st.none() | st.integers(1, 2**40),
       st.none() | st.text(max_size=8), st.sampled_from(["interactive", "standard", "batch"]),
       st.none() | st.from_regex(r"\A00-[0-9a-f]{32}-[0-9a-f]{16}-01\Z"))
def test_built_equals_the_validated_model(inputs: list[str], created: int,
                                          deadline: int | None, tenant: str | None,
                                          priority: str, trace: str | None) -> None:
    request = EmbedRequest.built(kind="embed", input=inputs)
    envelope = JobEnvelope.built(v=1, attempts=0, id="p.0.ab", model="m", priority=priority,
                                 created_ms=created, tenant=tenant, deadline_ms=deadline,
                                 request=request, trace=trace)
    checked = JobEnvelope.model_validate_json(envelope.model_dump_json())
    assert checked == envelope and checked.model_dump_json() == envelope.model_dump_json()
    result = EmbedResult.built(kind="embed", vectors=[[] for _ in inputs], dimensions=0,
                               usage=Usage.built(input_tokens=len(inputs), output_tokens=0),
                               echo=inputs, served_by=ServedBy(worker="w", pool="p",
                                                               engine="echo", device="none"),
                               cost_usd=None)
    outcome = JobOutcome.built(v=1, id="p.0.ab", state=JobState.SUCCEEDED, result=result,
                               error=None, finished_ms=created)
    assert JobOutcome.model_validate_json(outcome.model_dump_json()) == outcome
    assert outcome.model_dump_json() == JobOutcome.model_construct(
        v=1, id="p.0.ab", state=JobState.SUCCEEDED, result=result, error=None,
        finished_ms=created).model_dump_json()


def test_an_envelope_refuses_a_trace_that_is_not_a_w3c_traceparent() -> None:
    good = {"id": "p.0.ab", "model": "m", "priority": "standard", "created_ms": 1,
            "request": {"kind": "embed", "input": ["x"]}}
    ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert decode_envelope(json.dumps({**good, "trace": ok})).trace == ok
    for bad in ("00-xyz-b7ad6b7169203331-01", ok + "\n", "nope"):
        with pytest.raises(EntryDecodeError, match="trace"):
            decode_envelope(json.dumps({**good, "trace": bad}))


def test_built_needs_every_field() -> None:
    with pytest.raises(TypeError, match="needs all of"):
        EmbedRequest.built(input=["x"])


def test_built_refuses_a_field_the_schema_lacks_and_orders_the_rest() -> None:
    """Fields named in the schema's order are taken as given (the hot paths' calls);
    in any other order they are put in it; a name the schema lacks is refused either way."""
    for fields in ({"kind": "embed", "input": ["x"], "extra": 1},
                   {"extra": 1, "input": ["x"], "kind": "embed"}):
        with pytest.raises(TypeError, match="needs all of"):
            EmbedRequest.built(**fields)
    shuffled = Usage.built(output_tokens=2, input_tokens=1)
    assert list(shuffled.__dict__) == ["input_tokens", "output_tokens"]
    assert shuffled == Usage(input_tokens=1, output_tokens=2)
    assert shuffled.model_dump_json() == '{"input_tokens":1,"output_tokens":2}'
