"""The official openai SDK (pinned in the test extra), unchanged, against a real gateway
process with real workers behind it: chat, streaming with usage, embeddings in both
encodings, models, typed errors, and the SDK's own retries on our Retry-After."""

from __future__ import annotations

import time

import httpx
import numpy as np
import openai
import pytest

from switchyard.dispatcher.client import AsyncClient
from tests.dispatcher.gateway.conftest import KEY_ALPHA, KEY_GAMMA, Stack


def sdk(stack: Stack, key: str = KEY_ALPHA, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, **kw)  # type: ignore[arg-type]


HELLO = [{"role": "user", "content": "hello there, gateway"}]


def test_chat_completion(stack: Stack) -> None:
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model="echo-chat", messages=HELLO, max_completion_tokens=16, service_tier="priority")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "hello there, gateway"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.service_tier == "priority"  # the tier used, echoed
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 3
    job_id = raw.headers["x-request-id"]
    assert completion.id == f"chatcmpl-{job_id}" and job_id.startswith("echo.")


def test_max_tokens_cuts_the_text(stack: Stack) -> None:
    completion = sdk(stack).chat.completions.create(model="echo-chat", messages=HELLO,
                                                    max_tokens=2)
    assert completion.choices[0].message.content == "hello there,"
    assert completion.choices[0].finish_reason == "length"


def test_stream_with_usage(stack: Stack) -> None:
    chunks = list(sdk(stack).chat.completions.create(
        model="echo-chat", messages=HELLO, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == "hello there, gateway"
    assert len({c.id for c in chunks}) == 1


async def test_async_sdk_chat_and_stream(stack: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=KEY_ALPHA)
    completion = await client.chat.completions.create(model="echo-chat", messages=HELLO)
    assert completion.choices[0].message.content == "hello there, gateway"
    parts = [c.choices[0].delta.content or "" async for c in await client.chat.completions.create(
        model="echo-chat", messages=HELLO, stream=True)]
    assert "".join(parts) == "hello there, gateway"
    await client.close()


async def test_embeddings_in_both_encodings(stack: Stack) -> None:
    client = sdk(stack)
    texts = ["a cat sat on the mat", "quantum chromodynamics"]
    by_default = client.embeddings.create(model="minilm", input=texts)  # base64 on the wire
    as_float = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert [d.index for d in by_default.data] == [0, 1]
    assert len(by_default.data[0].embedding) == 384
    np.testing.assert_allclose(by_default.data[0].embedding, as_float.data[0].embedding,
                               rtol=1e-6, atol=1e-7)
    async with AsyncClient(stack.config, redis_url=stack.redis_url) as direct:
        vectors = (await (await direct.embed("minilm", texts, tenant="alpha")).result()).vectors
    np.testing.assert_allclose(as_float.data[1].embedding, vectors[1], rtol=1e-5, atol=1e-6)
    assert by_default.usage.prompt_tokens > 0
    one = client.embeddings.create(model="minilm", input="just one")
    assert len(one.data) == 1


def test_token_arrays_and_dimensions_are_refused_by_name(stack: Stack) -> None:
    client = sdk(stack)
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model="minilm", input=[[1, 2, 3]])
    assert "token-id" in tokens.value.message and tokens.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model="minilm", input="x", dimensions=64)
    assert dims.value.body["param"] == "dimensions"


def test_models(stack: Stack) -> None:
    client = sdk(stack)
    ids = [m.id for m in client.models.list()]
    assert ids == sorted(stack.config.models)
    assert client.models.retrieve("echo-chat").id == "echo-chat"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_errors_are_the_sdks_typed_exceptions(stack: Stack) -> None:
    client = sdk(stack, max_retries=0)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert unknown.value.code == "model_not_found"
    for extra in ({"n": 2}, {"tools": [{"type": "function", "function": {"name": "f"}}]},
                  {"logprobs": True}, {"presence_penalty": 0.5}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="echo-chat", messages=HELLO, **extra)
        assert refused.value.body["param"] == next(iter(extra))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="minilm", messages=HELLO)  # an embed model
    with pytest.raises(openai.AuthenticationError):
        sdk(stack, key="sk-not-a-key").models.list()
    too_big = "x" * (int(stack.config.limits.max_request_bytes) + 100 * 1024)
    with pytest.raises(openai.APIStatusError) as large:
        client.chat.completions.create(model="echo-chat",
                                       messages=[{"role": "user", "content": too_big}])
    assert large.value.status_code == 413


def test_no_key_is_401_on_every_route(stack: Stack) -> None:
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                         ("POST", "/v1/embeddings"), ("POST", "/v1/messages"),
                         ("GET", "/v1/jobs/echo.0.0123456789abcdef01234567")):
        assert httpx.request(method, stack.url + path, json={}).status_code == 401


def test_the_sdk_retries_on_our_retry_after(stack: Stack) -> None:
    """The ``full`` pool (cap 1, no worker) is full after one job: each attempt is a 503
    with Retry-After = the idle retry (1.2 s), which the SDK sleeps before its next."""
    client = sdk(stack, max_retries=0)
    httpx.post(f"{stack.url}/v1/chat/completions", json={"model": "full", "messages": HELLO},
               headers={"authorization": f"Bearer {KEY_ALPHA}", "prefer": "respond-async"})
    with pytest.raises(openai.InternalServerError) as full:
        client.chat.completions.create(model="full", messages=HELLO)
    assert full.value.code == "pool_full"
    assert full.value.response.headers["retry-after-ms"] == "1200"
    assert full.value.response.headers["retry-after"] == "2"
    before = stack.metric("switchyard_gateway_requests_total",
                          route="/v1/chat/completions", status="503", tenant="alpha")
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        sdk(stack, max_retries=2).chat.completions.create(model="full", messages=HELLO)
    elapsed = time.monotonic() - started
    after = stack.metric("switchyard_gateway_requests_total",
                         route="/v1/chat/completions", status="503", tenant="alpha")
    assert after - before == 3  # the first try and two retries
    assert elapsed >= 2 * 1.2  # the SDK's own backoff would be about 0.5 + 1 s


def test_a_tenant_over_its_quota_gets_429_and_a_capped_retry_after(stack: Stack) -> None:
    """gamma's bucket holds one request, refilled every 1,000 s: past the 120 s the openai
    SDK honours, the wait is sent as 120 s with x-should-retry: false (no retry)."""
    client = sdk(stack, key=KEY_GAMMA, max_retries=2)
    with pytest.raises(openai.RateLimitError) as limited:
        for _ in range(2):
            client.chat.completions.create(model="echo-chat", messages=HELLO)
    headers = limited.value.response.headers
    assert headers["retry-after"] == "120" and headers["x-should-retry"] == "false"
    assert limited.value.code == "rate_limit_exceeded"
    assert stack.metric("switchyard_gateway_requests_total", route="/v1/chat/completions",
                        status="429", tenant="gamma") == 1  # not retried


def test_health_readiness_and_metrics(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz")
    assert ready.status_code == 200 and "echo" in ready.json()["live_pools"]
    sdk(stack).chat.completions.create(model="echo-chat", messages=HELLO)
    assert stack.metric("switchyard_gateway_requests_total", route="/v1/chat/completions",
                        status="200", tenant="alpha") >= 1
    assert stack.metric("switchyard_gateway_request_seconds_count",
                        route="/v1/chat/completions") >= 1
