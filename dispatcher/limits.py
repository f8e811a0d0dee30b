"""The ``[limits]`` on what one request may carry, and text that is not valid Unicode
(a lone surrogate), checked at the boundary: the call fails alone, with ``InvalidRequest``,
before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.broker.config import LimitsConfig
from switchyard.broker.schemas import ChatRequest
from switchyard.dispatcher.errors import InvalidRequest

__all__ = ["check_chat", "check_embed", "utf8_size"]


def utf8_size(text: str, what: str) -> int:
    """Bytes of ``text`` in UTF-8; ``InvalidRequest`` if it cannot be encoded."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} is not valid Unicode text ({exc.reason} at "
                             f"position {exc.start})") from None


def check_embed(texts: Sequence[str], limits: LimitsConfig) -> None:
    if len(texts) > limits.max_texts:
        raise InvalidRequest(f"{len(texts)} texts in one request; at most {limits.max_texts} "
                             "([limits] max_texts)")
    size = sum(utf8_size(t, f"input[{i}]") for i, t in enumerate(texts))
    _check_size(size, limits)


def check_chat(request: ChatRequest, limits: LimitsConfig) -> None:
    if len(request.stop) > limits.max_stop:
        raise InvalidRequest(f"{len(request.stop)} stop strings; at most {limits.max_stop} "
                             "([limits] max_stop)")
    for i, stop in enumerate(request.stop):
        if len(stop) > limits.max_stop_chars:
            raise InvalidRequest(f"stop[{i}] is {len(stop)} characters; at most "
                                 f"{limits.max_stop_chars} ([limits] max_stop_chars)")
    size = sum(utf8_size(m.content, f"messages[{i}].content")
               for i, m in enumerate(request.messages))
    _check_size(size + sum(utf8_size(s, "stop") for s in request.stop), limits)


def _check_size(size: int, limits: LimitsConfig) -> None:
    if size > limits.max_request_bytes:
        raise InvalidRequest(f"the request carries {size} bytes of text; at most "
                             f"{int(limits.max_request_bytes)} ([limits] max_request_bytes)")
