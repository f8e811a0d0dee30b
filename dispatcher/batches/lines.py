"""A batch's lines: its input file read and checked one line at a time, each request
sent at the ``batch`` priority, and what came back written in OpenAI's line formats.

Input (one JSON object a line)::

    {"custom_id": "r1", "method": "POST", "url": "/v1/embeddings", "body": {...}}

A line that cannot be a request (not JSON, a field missing, another endpoint's url, a
``custom_id`` seen before) fails on its own, with an error line; the others run. Output::

    {"id": "batch_req_...", "custom_id": "r1", "error": null,
     "response": {"status_code": 200, "request_id": "<job id>", "body": {...}}}

A request that fails as an HTTP call would (an unknown model, an invalid body, an engine
error) is an error line with its ``response`` (status and OpenAI error body); one that
never ran (the window closed, the batch was cancelled) has ``response: null`` and an
``error`` with its code (``batch_expired``, ``batch_cancelled``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic_core

from switchyard.broker.schemas import ChatResult, EmbedResult
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.gateway import openai_wire as wire
from switchyard.dispatcher.gateway.errors import BadRequest, GatewayError, openai_body
from switchyard.dispatcher.jobs import AnyResult, AsyncJob

__all__ = ["CHAT", "EMBEDDINGS", "ENDPOINTS", "Line", "Refused", "Sent", "error_line",
           "failed_line", "output_line", "read_lines", "send"]

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
ENDPOINTS = (CHAT, EMBEDDINGS)
MAX_CUSTOM_ID = 200
"""Characters of a ``custom_id`` (it goes into the line's idempotency key)."""


@dataclass(frozen=True)
class Line:
    number: int
    """1-based, in the input file."""
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    """A line that cannot be a request."""

    number: int
    custom_id: str | None
    code: str
    message: str


def read_lines(path: Path, endpoint: str) -> Iterator[Line | Refused]:
    """The file's lines (blank ones skipped), each a request or why it cannot be one."""
    seen: set[str] = set()
    with path.open(encoding="utf-8", errors="replace") as text:
        for number, raw in enumerate(text, 1):
            if raw.strip():
                line = _line(number, raw, endpoint)
                if isinstance(line, Line):
                    if line.custom_id in seen:
                        line = Refused(number, line.custom_id, "duplicate_custom_id",
                                       f"line {number}: custom_id {line.custom_id!r} is on "
                                       "an earlier line")
                    else:
                        seen.add(line.custom_id)
                yield line


def _line(number: int, raw: str, endpoint: str) -> Line | Refused:
    try:
        item = json.loads(raw)
    except ValueError as exc:
        return Refused(number, None, "invalid_json_line", f"line {number}: not JSON ({exc})")
    if not isinstance(item, dict):
        return Refused(number, None, "invalid_json_line", f"line {number}: not a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return Refused(number, None, "missing_required_parameter",
                       f"line {number}: custom_id must be a string of 1 to {MAX_CUSTOM_ID} "
                       "characters")
    for name in ("method", "url", "body"):
        if name not in item:
            return Refused(number, custom_id, "missing_required_parameter",
                           f"line {number}: {name} is required")
    if item["method"] != "POST":
        return Refused(number, custom_id, "invalid_method",
                       f"line {number}: method must be POST: {item['method']!r}")
    if item["url"] != endpoint:
        return Refused(number, custom_id, "invalid_url", f"line {number}: url must be the "
                       f"batch's endpoint {endpoint!r}: {item['url']!r}")
    if not isinstance(item["body"], dict):
        return Refused(number, custom_id, "invalid_request",
                       f"line {number}: body must be a JSON object")
    return Line(number, custom_id, item["body"])


@dataclass(frozen=True)
class Sent:
    """A line's admitted job, and how its result becomes a response body."""

    job: AsyncJob[AnyResult]
    render: Callable[[AnyResult], dict[str, Any]]


async def send(client: AsyncClient, endpoint: str, line: Line, *, key: str, tenant: str,
               deadline_s: float) -> Sent:
    """Admit the line's request at the ``batch`` priority (one attempt: the caller retries
    rejections). Raises what the request's own call would: ``BadRequest`` and the enqueue
    API's errors."""
    if endpoint == CHAT:
        chat = wire.chat_args(line.body)
        if chat.stream:
            raise BadRequest("stream is not supported in a batch", "stream")
        job: AsyncJob[Any] = await client.chat(
            chat.model, chat.messages, max_tokens=chat.max_tokens,
            temperature=chat.temperature, top_p=chat.top_p, stop=chat.stop, seed=chat.seed,
            priority="batch", deadline_s=deadline_s, idempotency_key=key, tenant=tenant,
            max_retries=0)

        def chat_body(result: AnyResult) -> dict[str, Any]:
            assert isinstance(result, ChatResult)
            return wire.chat_completion(job.id, chat.model, result, "batch")
        return Sent(job, chat_body)
    embed = wire.embed_args(line.body)
    job = await client.embed(embed.model, embed.texts, priority="batch",
                             deadline_s=deadline_s, idempotency_key=key, tenant=tenant,
                             max_retries=0)

    def embed_body(result: AnyResult) -> dict[str, Any]:
        assert isinstance(result, EmbedResult)
        return wire.embeddings(result, embed.model, embed.base64, embed.dimensions)
    return Sent(job, embed_body)


def _line_id(job_id: str) -> str:
    """The line's own id: its job's token (unique as the job is), else a random one."""
    token = job_id.rpartition(".")[2]
    return f"batch_req_{token if token else secrets.token_hex(12)}"


def _dumps(item: dict[str, Any]) -> str:
    """Compact JSON (pydantic-core's serializer: the same text as ``json.dumps`` with
    compact separators, UTF-8 unescaped, six times as fast)."""
    return pydantic_core.to_json(item).decode()


def output_line(custom_id: str, request_id: str, body: dict[str, Any]) -> str:
    return _dumps({"id": _line_id(request_id), "custom_id": custom_id,
                   "response": {"status_code": 200, "request_id": request_id, "body": body},
                   "error": None})


def failed_line(custom_id: str, request_id: str, error: GatewayError) -> str:
    """A request that failed as its HTTP call would have: its status and error body."""
    return _dumps({"id": _line_id(request_id), "custom_id": custom_id,
                   "response": {"status_code": error.status, "request_id": request_id,
                                "body": openai_body(error)}, "error": None})


def error_line(custom_id: str | None, code: str, message: str) -> str:
    """A line that never ran as a request."""
    return _dumps({"id": _line_id(""), "custom_id": custom_id, "response": None,
                   "error": {"code": code, "message": message}})
