"""The OpenAI wire format, translated in one place: request bodies into the enqueue API's
arguments, results into response bodies and stream chunks.

What a route cannot honour is refused with a 400 naming the parameter, never ignored:
``n`` > 1, tools, logprobs, penalties, response formats other than text, image parts.
Fields that change nothing here are taken as they come: ``user``, ``metadata``,
``store``, ``stream_options``, ``parallel_tool_calls``, ``n`` = 1, zero penalties.
"""

from __future__ import annotations

import base64
import struct
import time
from dataclasses import dataclass
from typing import Any

from switchyard.broker.schemas import ChatResult, EmbedResult, Priority
from switchyard.dispatcher.gateway.errors import BadRequest

__all__ = ["ChatArgs", "EmbedArgs", "chat_args", "chat_chunk", "chat_completion",
           "embed_args", "embeddings", "tier_of", "usage_chunk"]

TIERS: dict[str, Priority] = {"priority": "interactive", "default": "standard",
                              "auto": "standard", "flex": "batch"}
TIER_OF: dict[Priority, str] = {"interactive": "priority", "standard": "default",
                                "batch": "flex"}

_CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
                "top_p", "stop", "seed", "stream", "stream_options", "user", "metadata",
                "service_tier", "store", "n", "presence_penalty", "frequency_penalty",
                "logprobs", "parallel_tool_calls", "response_format", "tool_choice"}
_NEUTRAL: dict[str, object] = {"n": 1, "presence_penalty": 0, "frequency_penalty": 0,
                               "logprobs": False, "tool_choice": "none"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class ChatArgs:
    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    stream: bool
    include_usage: bool
    tier: Priority | None


@dataclass(frozen=True)
class EmbedArgs:
    model: str
    texts: list[str]
    base64: bool
    dimensions: int | None
    tier: Priority | None


def tier_of(body: dict[str, Any]) -> Priority | None:
    tier = body.get("service_tier")
    if tier is None:
        return None
    if tier not in TIERS:
        raise BadRequest(f"service_tier must be one of {', '.join(TIERS)}: {tier!r}",
                         "service_tier")
    return TIERS[tier]


def chat_args(body: dict[str, Any]) -> ChatArgs:
    for name, value in body.items():
        if value is None:
            continue
        if name not in _CHAT_FIELDS:
            raise BadRequest(f"parameter {name!r} is not supported here", name,
                             "unsupported_parameter")
        if name in _NEUTRAL and value != _NEUTRAL[name]:
            raise BadRequest(f"{name}={value!r} is not supported here (only "
                             f"{_NEUTRAL[name]!r})", name, "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise BadRequest("response_format: only {\"type\": \"text\"} is supported here",
                         "response_format", "unsupported_parameter")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", "stream_options")
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens", 256)
    return ChatArgs(
        model=_model(body), messages=_messages(body.get("messages")),
        max_tokens=_number(max_tokens, "max_tokens", int),
        temperature=_number(body.get("temperature", 1.0), "temperature", float),
        top_p=_number(body.get("top_p", 1.0), "top_p", float),
        stop=[stop] if isinstance(stop, str) else _strings(stop or [], "stop"),
        seed=None if body.get("seed") is None else _number(body["seed"], "seed", int),
        stream=body.get("stream") is True, include_usage=options.get("include_usage") is True,
        tier=tier_of(body))


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required (a string)", "model")
    return model


def _number(value: object, name: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            kind is int and not isinstance(value, int)):
        raise BadRequest(f"{name} must be {'an integer' if kind is int else 'a number'}: "
                         f"{value!r}", name)
    return value


def _strings(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRequest(f"{name} must be a string or a list of strings", name)
    return value


def _messages(value: object) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("messages must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise BadRequest(f"{where}: a message has a role ({', '.join(_ROLES)}) here "
                             "(tool messages are not supported)", where)
        if message.get("tool_calls") or message.get("function_call"):
            raise BadRequest(f"{where}: tool calls are not supported here", where)
        out.append({"role": _ROLES[message["role"]],
                    "content": text_of(message.get("content"), f"{where}.content")})
    return out


def text_of(content: object, where: str) -> str:
    """A message's text: a string, or a list of text parts (joined); other parts refused."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                    part.get("text"), str):
                raise BadRequest(f"{where}: only text parts are supported here", where)
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest(f"{where} must be a string or a list of text parts", where)


def embed_args(body: dict[str, Any]) -> EmbedArgs:
    for name, value in body.items():
        if value is not None and name not in {"model", "input", "encoding_format",
                                              "dimensions", "user", "service_tier"}:
            raise BadRequest(f"parameter {name!r} is not supported here", name,
                             "unsupported_parameter")
    raw = body.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = raw
    elif isinstance(raw, list) and raw and all(
            isinstance(t, int) or (isinstance(t, list) and all(isinstance(i, int) for i in t))
            for t in raw):
        raise BadRequest("input: token-id arrays are not supported by this model; send the "
                         "text (with the openai SDK: pass strings, and tiktoken is not used)",
                         "input", "unsupported_input")
    else:
        raise BadRequest("input must be a string or a non-empty list of strings", "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise BadRequest("encoding_format must be float or base64", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None:
        dims = _number(dims, "dimensions", int)
    return EmbedArgs(_model(body), texts, fmt == "base64", dims, tier_of(body))


def embeddings(result: EmbedResult, model: str, as_base64: bool,
               dimensions: int | None) -> dict[str, Any]:
    if dimensions is not None and dimensions != result.dimensions:
        raise BadRequest(f"dimensions: model {model!r} makes {result.dimensions}-dimensional "
                         "embeddings and cannot shorten them", "dimensions")
    data = [{"object": "embedding", "index": i,
             "embedding": _base64(v) if as_base64 else v}
            for i, v in enumerate(result.vectors)]
    tokens = result.usage.input_tokens
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _usage(result: ChatResult) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens}


def chat_completion(job_id: str, model: str, result: ChatResult, tier: Priority
                    ) -> dict[str, Any]:
    return {"id": f"chatcmpl-{job_id}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text,
                                                  "refusal": None},
                         "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": _usage(result), "service_tier": TIER_OF[tier],
            "system_fingerprint": None}


def chat_chunk(job_id: str, model: str, created: int, tier: Priority, *,
               role: bool = False, text: str | None = None,
               finish: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``: the first carries the role, the last one the
    ``finish_reason`` (with an empty delta); ``usage`` is null on every one of them."""
    delta: dict[str, str] = {}
    if role:
        delta["role"] = "assistant"
    if text is not None:
        delta["content"] = text
    return {"id": f"chatcmpl-{job_id}", "object": "chat.completion.chunk", "created": created,
            "model": model, "service_tier": TIER_OF[tier], "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None}


def usage_chunk(job_id: str, model: str, created: int, tier: Priority,
                result: ChatResult) -> dict[str, Any]:
    """``stream_options.include_usage``: the last chunk, no choices, the usage."""
    return {"id": f"chatcmpl-{job_id}", "object": "chat.completion.chunk", "created": created,
            "model": model, "service_tier": TIER_OF[tier], "system_fingerprint": None,
            "choices": [], "usage": _usage(result)}
