"""The canonical provider interface, its errors, and the HTTP plumbing adapters share.

Every adapter streams from its provider, whatever the caller asked: one code path, and
``on_text`` sees text as it arrives. Errors are classified once, here:

- ``retry_elsewhere``: 408, 409, 429, 500, 502, 503, 504, 529, connection errors,
  timeouts, a stream cut or an error event before any text: another target may serve;
- not ``retry_elsewhere`` on this target (``fatal_here``): 400, 401, 403, 404, quota
  exhausted; 401 and 403 also mean the key is wrong, reported loudly (``bad_key``);
- ``after_text``: the stream failed after text reached the caller; the request ends
  with a typed error, never a silent truncation.

API keys come from the environment, go only into request headers, and never into a
message, a log line or a result.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from switchyard.broker.config import ProviderConfig
from switchyard.broker.schemas import ChatMessage
from switchyard.workers.errors import WorkerError
from switchyard.workers.providers.scrub import scrub_patterns
from switchyard.workers.ratelimit import announced_pause

__all__ = ["Completion", "Provider", "ProviderError", "StreamParser", "build_provider",
           "sse_events", "stream_chat"]

RETRY_ELSEWHERE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
OnText = Callable[[str], bool | None]
"""Called with each piece of text; False: the job was cancelled, stop the call."""


@dataclass
class Completion:
    text: str
    finish_reason: str  # 'stop' | 'length'
    input_tokens: int
    output_tokens: int
    pause_s: float = 0.0
    """How long the provider's rate-limit headers asked to hold further calls."""


class ProviderError(WorkerError):
    """One failed attempt at one target."""

    def __init__(self, message: str, *, status: int | None = None, retry_elsewhere: bool,
                 retry_after: float | None = None, after_text: bool = False,
                 bad_key: bool = False) -> None:
        super().__init__(scrub_patterns(message))
        self.status = status
        self.retry_elsewhere = retry_elsewhere
        self.retry_after = retry_after
        self.after_text = after_text
        self.bad_key = bad_key
        self.pause_s = 0.0


class Provider(Protocol):
    name: str

    async def chat(self, model: str, messages: Sequence[ChatMessage], params: dict[str, Any],
                   on_text: OnText, first_timeout_s: float) -> Completion: ...

    async def embed(self, model: str, texts: Sequence[str]) -> tuple[list[list[float]], int]: ...

    async def aclose(self) -> None: ...


def http_client(config: ProviderConfig, headers: dict[str, str]) -> httpx.AsyncClient:
    """One pooled client per provider; SDK-style retries off (the bridge retries)."""
    limits = httpx.Limits(max_connections=config.max_connections,
                          max_keepalive_connections=config.max_connections)
    timeout = httpx.Timeout(None, connect=config.connect_timeout_s)
    return httpx.AsyncClient(base_url=config.base_url.rstrip("/") + "/", headers=headers,
                             limits=limits, timeout=timeout)


def api_key(config: ProviderConfig) -> str:
    if config.api_key_env is None:
        return ""
    return os.environ.get(config.api_key_env, "")


def status_error(provider: str, response: httpx.Response, body: str) -> ProviderError:
    """Classify a non-2xx answer. The message carries the provider's error text, never
    our request (which holds the key in its headers)."""
    status = response.status_code
    detail = _error_text(body)
    quota = status == 429 and "quota" in detail.lower()
    error = ProviderError(
        f"{provider} answered {status}: {detail[:300]}", status=status,
        retry_elsewhere=(status in RETRY_ELSEWHERE and not quota) or status >= 500,
        retry_after=_retry_after(response), bad_key=status in (401, 403),
    )
    error.pause_s = announced_pause(response.headers)
    return error


def transport_error(provider: str, exc: Exception, *, after_text: bool) -> ProviderError:
    kind = "timed out" if isinstance(exc, TimeoutError | httpx.TimeoutException) else "failed"
    return ProviderError(f"{provider} {kind}: {type(exc).__name__}", retry_elsewhere=True,
                         after_text=after_text)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a server-sent-events body."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield event, "\n".join(data)


def _retry_after(response: httpx.Response) -> float | None:
    for header in ("retry-after-ms", "retry-after"):
        raw = response.headers.get(header)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                return None
            return value / 1000 if header == "retry-after-ms" else value
    return None


def _error_text(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    return str(error or parsed)


def build_provider(name: str, config: ProviderConfig) -> Provider:
    if config.kind == "anthropic":
        from switchyard.workers.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, config)
    from switchyard.workers.providers.openai import OpenAIProvider

    return OpenAIProvider(name, config)


class StreamParser(Protocol):
    """Turns one provider's SSE events into text; ``result`` once the stream ends.
    ``finished``: the provider's end-of-stream event arrived (without it the stream was
    cut, whatever text came)."""

    finished: bool

    def feed(self, event: str, data: str) -> str | None: ...

    def result(self, text: str) -> Completion: ...


async def stream_chat(client: httpx.AsyncClient, provider: str, path: str, body: dict[str, Any],
                      parser: StreamParser, on_text: OnText, first_timeout_s: float,
                      headers: dict[str, str] | None = None) -> Completion:
    """POST a streaming request and feed its events to ``parser``; text goes to
    ``on_text`` as it arrives. Raises :class:`ProviderError`, classified."""
    pieces: list[str] = []
    pause = 0.0
    stopped = False
    try:
        async with asyncio.timeout(first_timeout_s) as first:
            async with client.stream("POST", path, json=body, headers=headers) as response:
                pause = announced_pause(response.headers)
                if response.status_code >= 400:
                    raise status_error(provider, response, (await response.aread()).decode(
                        "utf-8", "replace"))
                async for event, data in sse_events(response):
                    text = parser.feed(event, data)
                    if text:
                        if not pieces:
                            first.reschedule(None)  # the rest is bounded by the caller
                        pieces.append(text)
                        if on_text(text) is False:  # cancelled: close the upstream call
                            stopped = True
                            break
                if not parser.finished and not stopped:
                    raise ProviderError(f"{provider} stream ended before it finished",
                                        retry_elsewhere=True)
    except ProviderError as exc:
        exc.after_text = bool(pieces)
        exc.pause_s = max(exc.pause_s, pause)
        raise
    except (httpx.HTTPError, TimeoutError, ValueError) as exc:
        raise transport_error(provider, exc, after_text=bool(pieces)) from None
    completion = parser.result("".join(pieces))
    completion.pause_s = pause
    return completion
