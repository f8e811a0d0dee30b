"""The official anthropic SDK (pinned in the test extra), unchanged, against a real
gateway process: messages, the streaming event sequence, and errors in Anthropic's shape
(529 ``overloaded_error`` for a full pool, with the SDK's typed exceptions)."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.dispatcher.gateway.conftest import KEY_ALPHA, Stack

HI = [{"role": "user", "content": "hi from anthropic"}]


def sdk(stack: Stack, key: str = KEY_ALPHA, **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=key, **kw)  # type: ignore[arg-type]


def test_messages(stack: Stack) -> None:
    message = sdk(stack).messages.create(model="echo-chat", max_tokens=16, messages=HI,
                                         system="be brief")
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == "hi from anthropic"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3
    cut = sdk(stack).messages.create(model="echo-chat", max_tokens=1, messages=[
        {"role": "user", "content": [{"type": "text", "text": "one two"}]}])
    assert cut.content[0].text == "one" and cut.stop_reason == "max_tokens"  # type: ignore[union-attr]


def test_streaming_event_sequence(stack: Stack) -> None:
    with sdk(stack).messages.stream(model="echo-chat", max_tokens=16, messages=HI) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "content_block_stop" in events
    assert events[-2] == "message_delta"
    assert final.content[0].text == "hi from anthropic"  # type: ignore[union-attr]
    assert final.usage.output_tokens == 3 and final.stop_reason == "end_turn"


async def test_async_sdk(stack: Stack) -> None:
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key=KEY_ALPHA)
    text = []
    async with client.messages.stream(model="echo-chat", max_tokens=16, messages=HI) as stream:
        async for piece in stream.text_stream:
            text.append(piece)
    assert "".join(text) == "hi from anthropic"
    await client.close()


def test_errors_in_anthropics_shape(stack: Stack) -> None:
    client = sdk(stack, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=8, messages=HI)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="echo-chat", max_tokens=8, messages=HI,
                               tools=[{"name": "f", "input_schema": {"type": "object"}}])
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as denied:
        sdk(stack, key="nope", max_retries=0).messages.create(model="echo-chat",
                                                                max_tokens=8, messages=HI)
    assert denied.value.body["type"] == "error"  # type: ignore[index]
    httpx.post(f"{stack.url}/v1/messages", json={"model": "full", "max_tokens": 8,
               "messages": HI}, headers={"x-api-key": KEY_ALPHA, "prefer": "respond-async"})
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client.messages.create(model="full", max_tokens=8, messages=HI)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert overloaded.value.response.headers["retry-after"] == "2"


def test_a_failing_stream_ends_with_an_error_event(stack: Stack) -> None:
    client = sdk(stack, max_retries=0)
    with pytest.raises(anthropic.APIError), client.messages.stream(
            model="parked", max_tokens=8, messages=HI,
            extra_headers={"x-switchyard-deadline": "1"}) as stream:
        for _ in stream:
            pass
