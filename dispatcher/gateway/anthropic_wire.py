"""The Anthropic Messages wire format, translated in one place: a ``/v1/messages`` body
into the enqueue API's arguments, a result into a ``message``, and the event sequence of a
stream (``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``...,
``content_block_stop``, ``message_delta``, ``message_stop``).

Tools, images and extended thinking are refused with a 400 naming the parameter.
``message_start`` carries an estimate of the input tokens (about four characters a
token); ``message_delta`` carries the counts the worker reported. ``stop_reason`` is
``end_turn`` or ``max_tokens``: the engines do not say which stop
sequence ended a text, so a stop sequence reads as ``end_turn`` too.
"""

from __future__ import annotations

from typing import Any

from switchyard.broker.schemas import ChatResult, Priority
from switchyard.dispatcher.gateway.errors import BadRequest
from switchyard.dispatcher.gateway.openai_wire import ChatArgs, text_of

__all__ = ["message", "messages_args", "stream_end", "stream_start",
           "text_delta"]

_FIELDS = {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature",
           "top_p", "stream", "metadata", "service_tier", "top_k"}
_TIERS: dict[str, Priority] = {"auto": "standard", "standard_only": "standard"}


def messages_args(body: dict[str, Any]) -> ChatArgs:
    for name, value in body.items():
        if value is not None and name not in _FIELDS:
            raise BadRequest(f"{name}: not supported here", name)
    if body.get("top_k") is not None:
        raise BadRequest("top_k: not supported here", "top_k")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: a string is required", "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise BadRequest("max_tokens: an integer is required", "max_tokens")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise BadRequest("messages: a non-empty list is required", "messages")
    messages = []
    system = body.get("system")
    if system is not None:
        messages.append({"role": "system", "content": text_of(system, "system")})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: user or assistant", f"messages.{i}.role")
        messages.append({"role": turn["role"],
                         "content": text_of(turn.get("content"), f"messages.{i}.content")})
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("stop_sequences: a list of strings", "stop_sequences")
    tier = body.get("service_tier")
    if tier is not None and tier not in _TIERS:
        raise BadRequest("service_tier: auto or standard_only", "service_tier")
    return ChatArgs(model, messages, max_tokens, _number(body, "temperature"),
                    _number(body, "top_p"), stop, seed=None, stream=body.get("stream") is True,
                    include_usage=False, tier=None if tier is None else _TIERS[tier])


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name, 1.0)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name}: a number is required", name)
    return float(value)


def _stop_reason(result: ChatResult) -> str:
    return "max_tokens" if result.finish_reason == "length" else "end_turn"


def message(job_id: str, model: str, result: ChatResult) -> dict[str, Any]:
    return {"id": f"msg_{job_id}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": result.text}],
            "stop_reason": _stop_reason(result), "stop_sequence": None,
            "usage": {"input_tokens": result.usage.input_tokens,
                      "output_tokens": result.usage.output_tokens}}


def stream_start(job_id: str, model: str, input_tokens: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("message_start", {"type": "message_start", "message": {
            "id": f"msg_{job_id}", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]


def text_delta(text: str) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": text}})


def stream_end(result: ChatResult) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": _stop_reason(result), "stop_sequence": None},
                           "usage": {"input_tokens": result.usage.input_tokens,
                                     "output_tokens": result.usage.output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]
