"""The ``[limits]`` on what one request may carry, and text that is not valid Unicode
(a lone surrogate), checked at the boundary: the call fails alone, with ``InvalidRequest``,
before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

from switchyard.broker.config import LimitsConfig
from switchyard.broker.keys import TENANT_NAME
from switchyard.broker.schemas import ChatRequest, Priority
from switchyard.dispatcher.errors import InvalidRequest
from switchyard.dispatcher.submitter import Submission

__all__ = ["MAX_DEADLINE_S", "check_chat", "check_embed", "check_options", "utf8_size"]

MAX_DEADLINE_S = 366 * 86_400
"""The longest deadline a job may ask for (a year)."""
_PRIORITIES = frozenset(get_args(Priority))


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
    if len(texts) == 1 and texts[0].isascii():  # (one byte a character, no surrogate)
        size = len(texts[0])
    else:
        size = sum(len(t) if t.isascii() else utf8_size(t, f"input[{i}]")
                   for i, t in enumerate(texts))
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


def check_options(job: Submission, max_retries: object) -> None:
    """The options every enqueue call takes, checked at the boundary."""
    if not isinstance(job.priority, str) or job.priority not in _PRIORITIES:
        raise InvalidRequest(f"priority must be interactive, standard or batch: {job.priority!r}")
    deadline = job.deadline_s
    if deadline is not None and not (isinstance(deadline, int | float)
                                     and not isinstance(deadline, bool)
                                     and 0 < deadline <= MAX_DEADLINE_S):
        raise InvalidRequest(f"deadline_s must be a number of seconds in (0, {MAX_DEADLINE_S}]: "
                             f"{deadline!r}")
    key = job.idempotency_key
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= 256):
        raise InvalidRequest("idempotency_key must be a string of 1 to 256 characters")
    if key is not None and not key.isascii():  # (ASCII is valid UTF-8 as it is)
        utf8_size(key, "idempotency_key")
    if job.tenant is not None and not (isinstance(job.tenant, str)
                                       and TENANT_NAME.match(job.tenant)):
        raise InvalidRequest("tenant must be 1 to 128 letters, digits or _.@- "
                             f"(starting with a letter or digit): {job.tenant!r}")
    if max_retries is not None and not (isinstance(max_retries, int)
                                        and not isinstance(max_retries, bool)
                                        and 0 <= max_retries <= 100):
        raise InvalidRequest(f"max_retries must be an integer from 0 to 100: {max_retries!r}")
    if not isinstance(job.durable, bool):
        raise InvalidRequest(f"durable must be True or False: {job.durable!r}")
