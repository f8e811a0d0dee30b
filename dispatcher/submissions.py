"""Calls into submissions: the arguments of ``embed`` and ``chat`` checked and built into a
:class:`Submission` once, at the boundary, for the async and the sync client alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from switchyard.broker.config import LimitsConfig
from switchyard.broker.schemas import ChatMessage, ChatRequest, EmbedRequest, Priority
from switchyard.dispatcher.errors import InvalidRequest
from switchyard.dispatcher.limits import check_chat, check_embed
from switchyard.dispatcher.submitter import Submission

__all__ = ["chat_submission", "embed_submission", "request_tokens", "wants_deltas"]


def embed_submission(
    limits: LimitsConfig, model: str, input: str | Sequence[str], priority: Priority,
    deadline_s: float | None, idempotency_key: str | None, tenant: str | None, durable: bool,
) -> Submission:
    if type(input) is str:  # (the common call, checked without a loop)
        texts = [input]
    elif isinstance(input, list | tuple) and input and all(isinstance(t, str) for t in input):
        texts = list(input)
    else:
        raise InvalidRequest("embed input must be a string or a non-empty list of strings")
    check_embed(texts, limits)
    # Checked above, so built without a second validation pass (this is the hot path).
    request = EmbedRequest.built(kind="embed", input=texts)
    return Submission(model, request, priority, deadline_s, idempotency_key, tenant, durable)


def chat_submission(
    limits: LimitsConfig, model: str, messages: Sequence[ChatMessage | Mapping[str, str]], *,
    max_tokens: int, temperature: float, top_p: float, stop: str | Sequence[str] | None,
    seed: int | None, stream: bool, priority: Priority, deadline_s: float | None,
    idempotency_key: str | None, tenant: str | None, durable: bool,
) -> Submission:
    try:
        request = ChatRequest.model_validate({
            "messages": messages, "max_tokens": max_tokens,
            "temperature": temperature, "top_p": top_p,
            "stop": [stop] if isinstance(stop, str) else stop or [],
            "seed": seed, "stream": stream,
        })
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"chat request: {where}: {first['msg']}") from None
    check_chat(request, limits)
    return Submission(model, request, priority, deadline_s, idempotency_key, tenant, durable)


def request_tokens(request: EmbedRequest | ChatRequest) -> int:
    """A request's tokens for a tenant's tokens-per-minute bucket: its input at about four
    characters a token, plus what it may generate."""
    if isinstance(request, EmbedRequest):
        return sum(len(t) for t in request.input) // 4 + 1
    return sum(len(m.content) for m in request.messages) // 4 + 1 + request.max_tokens


def wants_deltas(request: EmbedRequest | ChatRequest) -> bool:
    """Whether the caller asked for the text as it is generated."""
    return isinstance(request, ChatRequest) and request.stream
