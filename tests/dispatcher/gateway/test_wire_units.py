"""The gateway's translations on their own: what is taken, what is refused by name, the
base64 encoding the openai SDK decodes, and the Retry-After the SDKs act on."""

from __future__ import annotations

import base64
import struct

import pytest

from switchyard.broker.schemas import EmbedResult
from switchyard.dispatcher.errors import AdmissionRejected, JobFailed
from switchyard.dispatcher.gateway import openai_wire
from switchyard.dispatcher.gateway.errors import BadRequest, http_error

MESSAGES = [{"role": "developer", "content": [{"type": "text", "text": "a"},
                                              {"type": "text", "text": "b"}]},
            {"role": "user", "content": "hi"}]


def test_fields_that_change_nothing_are_taken() -> None:
    args = openai_wire.chat_args({
        "model": "m", "messages": MESSAGES, "n": 1, "presence_penalty": 0, "user": "u",
        "metadata": {"k": "v"}, "store": False, "logprobs": False, "stop": "END",
        "max_tokens": 5, "max_completion_tokens": 7, "stream_options": None,
        "response_format": {"type": "text"}, "service_tier": "flex", "tools": None})
    assert args.messages == [{"role": "system", "content": "ab"},
                             {"role": "user", "content": "hi"}]
    assert args.max_tokens == 7 and args.stop == ["END"] and args.tier == "batch"


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 3}, "n"), ({"functions": []}, "functions"), ({"seed": "1"}, "seed"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"service_tier": "scale"}, "service_tier"), ({"temperature": True}, "temperature"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
])
def test_what_a_route_cannot_honour_is_refused_by_name(extra: dict[str, object],
                                                       param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        openai_wire.chat_args({"model": "m", "messages": MESSAGES, **extra})
    assert refused.value.param == param and refused.value.status == 400


def test_base64_is_little_endian_float32() -> None:
    result = EmbedResult(vectors=[[1.0, -2.5, 0.125]], dimensions=3)
    data = openai_wire.embeddings(result, "m", True, None)["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(data)) == (1.0, -2.5, 0.125)
    with pytest.raises(BadRequest):
        openai_wire.embeddings(result, "m", False, 2)


def test_retry_after_is_rounded_up_and_capped() -> None:
    soon = http_error(AdmissionRejected("m", "standard", 5, 5, 10.0, 0.25), 120)
    assert soon.status == 503 and soon.code == "pool_full"
    assert soon.headers == {"retry-after": "1", "retry-after-ms": "250"}
    late = http_error(AdmissionRejected("m", "standard", 5, 5, 0.0, 900.0, "tenant_quota",
                                        "tpm"), 120)
    assert late.status == 429 and late.kind == "tokens"
    assert late.headers == {"x-should-retry": "false", "retry-after": "120",
                            "retry-after-ms": "120000"}


def test_job_failures_map_to_statuses() -> None:
    assert http_error(JobFailed("j", "context_length_exceeded", "too long"), 60).status == 400
    assert http_error(JobFailed("j", "providers_failed", "all down"), 60).status == 502
    assert http_error(JobFailed("j", "engine_error", "boom"), 60).status == 500
    hidden = http_error(RuntimeError("secret detail"), 60)
    assert hidden.status == 500 and "secret" not in hidden.message
