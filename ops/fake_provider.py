"""`switchyard fake-provider`: an HTTP server that answers like OpenAI and Anthropic, with
faults on demand. Tests, benchmarks and the local stack use it when no real key is set.

Endpoints: ``POST /v1/chat/completions`` and ``/v1/embeddings`` (OpenAI shapes, SSE when
``stream`` is set), ``POST /v1/messages`` (Anthropic shapes, SSE events). Control:
``GET /_stats`` (calls by path and by status), ``POST /_profile`` (replace the behaviour,
JSON fields of :class:`FakeProfile`). The text of a reply is ``w1 w2 ... wN``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler
from typing import Any

from switchyard.ops.fake_server import BackgroundServer

__all__ = ["PROFILES", "FakeProfile", "FakeProvider", "add_parser", "command"]


@dataclass(frozen=True)
class FakeProfile:
    latency_ms: float = 50.0
    """Wait before the response headers."""
    token_ms: float = 0.0
    """Wait between streamed tokens."""
    tokens: int = 8
    """Reply length (or max_tokens, if smaller)."""
    error_status: int | None = None
    """Answer this status instead (all requests, or ``error_rate`` of them)."""
    error_rate: float = 1.0
    retry_after_s: float | None = None
    """Retry-After header sent with an error."""
    error_code: str = ""
    """OpenAI error code in the body, e.g. insufficient_quota."""
    hang: bool = False
    """Accept the request and never answer (a timeout)."""
    cut_after: int | None = None
    """Close the stream after this many tokens, without finishing it."""
    error_event_after: int | None = None
    """Send an SSE error event after this many tokens."""
    api_key: str | None = None
    """If set, requests without it get 401."""
    fail_first: int = 0
    """With ``error_status``: only the first this-many requests fail (0: all may)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (rate-limit headers, say) on every answer."""
    echo_auth: bool = False
    """Error bodies repeat the request's credentials (as some proxies do): what the
    bridge must scrub before it stores, logs or returns any provider text."""


PROFILES = {
    "healthy": FakeProfile(),
    "slow": FakeProfile(latency_ms=2_000, token_ms=50),
    "flaky": FakeProfile(error_status=500, error_rate=0.3),
    "down": FakeProfile(error_status=503),
    "ratelimited": FakeProfile(error_status=429, retry_after_s=2.0),
    "overloaded": FakeProfile(error_status=529),
    "hanging": FakeProfile(hang=True),
    "cut": FakeProfile(cut_after=3),
}


KEEP = 10_000
"""Requests remembered (a long-running fake must not grow without bound)."""


class FakeProvider(BackgroundServer):
    """The server, on 127.0.0.1:``port`` (0: any free port), in a background thread."""

    def __init__(self, profile: FakeProfile | None = None, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.profile = profile or FakeProfile()
        self.calls: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.arrivals = 0
        self.times: deque[float] = deque(maxlen=KEEP)
        """When each of the last model requests arrived (time.time())."""
        self.requests: deque[tuple[str, dict[str, str], dict[str, Any]]] = deque(maxlen=KEEP)
        """(path, headers, JSON body) of each of the last model requests."""
        self._lock = threading.Lock()
        super().__init__(_handler(self), port, host)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set(self, **changes: Any) -> None:
        self.profile = replace(self.profile, **changes)

    def arrived(self) -> int:
        """Note a model request; how many came before it."""
        with self._lock:
            self.times.append(time.time())
            self.arrivals += 1
            return self.arrivals - 1

    def count(self, path: str, status: int) -> None:
        with self._lock:
            self.calls[path] += 1
            self.statuses[status] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": dict(self.calls), "statuses": {str(k): v
                                                            for k, v in self.statuses.items()}}


def _words(n: int) -> list[str]:
    return [f"w{i}" if i == 1 else f" w{i}" for i in range(1, n + 1)]


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255 for b in digest[:8]]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        if self.path == "/_stats":
            self._json(200, self.fake.stats())
        else:
            self._json(404, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/_profile":
            known = {f.name for f in fields(FakeProfile)}
            self.fake.profile = FakeProfile(**{k: v for k, v in body.items() if k in known})
            return self._json(200, asdict(self.fake.profile))
        profile = self.fake.profile
        before = self.fake.arrived()
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake.requests.append((self.path, headers, body))
        if profile.hang:
            self.fake.count(self.path, 0)
            time.sleep(3600)
            return
        time.sleep(profile.latency_ms / 1000)
        status = self._fault(profile, before)
        self.fake.count(self.path, status)
        if status != 200:
            return self._error(status, profile)
        if self.path == "/v1/embeddings":
            inputs = body.get("input") or []
            return self._json(200, {"data": [{"index": i, "embedding": _vector(t)}
                                             for i, t in enumerate(inputs)],
                                    "usage": {"prompt_tokens": 2 * len(inputs)}})
        n = min(profile.tokens, int(body.get("max_tokens") or profile.tokens))
        anthropic = self.path == "/v1/messages"
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        self._stream(_words(n), prompt, n, profile, anthropic)

    def _fault(self, profile: FakeProfile, before: int) -> int:
        if profile.api_key is not None:
            given = (self.headers.get("x-api-key")
                     or self.headers.get("authorization", "").removeprefix("Bearer "))
            if given != profile.api_key:
                return 401
        if profile.fail_first and before >= profile.fail_first:
            return 200
        if profile.error_status and random.random() < profile.error_rate:
            return profile.error_status
        return 200

    def _error(self, status: int, profile: FakeProfile) -> None:
        headers = {}
        if profile.retry_after_s is not None:
            headers["retry-after"] = str(profile.retry_after_s)
        message = {401: "invalid api key", 429: "rate limited"}.get(status, "upstream error")
        if profile.echo_auth:
            message += (f" (request had Authorization: {self.headers.get('Authorization')}; "
                        f"x-api-key={self.headers.get('x-api-key')})")
        self._json(status, {"error": {"message": message, "type": "fake_error",
                                      "code": profile.error_code or None}}, headers)

    def _stream(self, words: list[str], prompt: int, n: int, profile: FakeProfile,
                anthropic: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        for key, value in profile.headers.items():
            self.send_header(key, value)
        self.end_headers()
        events = _anthropic_events if anthropic else _openai_events
        sent = 0
        try:
            for chunk, is_text in events(words, prompt, n):
                if is_text and profile.cut_after is not None and sent >= profile.cut_after:
                    break  # the connection just closes
                if (is_text and profile.error_event_after is not None
                        and sent >= profile.error_event_after):
                    self.wfile.write(_error_event(anthropic).encode())
                    break
                sent += is_text
                self.wfile.write(chunk.encode())
                self.wfile.flush()
                if is_text:
                    time.sleep(profile.token_ms / 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def _handler(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"fake": fake})


def _error_event(anthropic: bool) -> str:
    if anthropic:
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return f"event: error\ndata: {json.dumps(body)}\n\n"
    body = {"error": {"message": "stream failed", "type": "server_error"}}
    return f"data: {json.dumps(body)}\n\n"


def _openai_events(words: list[str], prompt: int, n: int) -> list[tuple[str, bool]]:
    text = [(f"data: {json.dumps({'choices': [{'delta': {'content': w}}]})}\n\n", True)
            for w in words]
    finish = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": n}}
    return [*text, (f"data: {json.dumps(finish)}\n\n", False),
            (f"data: {json.dumps(usage)}\n\n", False), ("data: [DONE]\n\n", False)]


def _anthropic_events(words: list[str], prompt: int, n: int) -> list[tuple[str, bool]]:
    def event(kind: str, body: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **body})}\n\n"

    return [(event("message_start", {"message": {"usage": {"input_tokens": prompt}}}), False),
            *[(event("content_block_delta", {"delta": {"type": "text_delta", "text": w}}), True)
              for w in words],
            (event("message_delta", {"delta": {"stop_reason": "end_turn"},
                                     "usage": {"output_tokens": n}}), False),
            (event("message_stop", {}), False)]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fake-provider", help="a fake OpenAI/Anthropic server with faults")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 inside a container")
    p.add_argument("--profile", default="healthy", choices=sorted(PROFILES))
    p.add_argument("--latency-ms", type=float, help="overrides the profile's latency")
    p.set_defaults(handler=lambda ns: serve(ns.port, ns.profile, ns.latency_ms, ns.host))


def command(port: int, *, latency_ms: float | None = None) -> list[str]:
    """The command line of a fake provider in its own process, on 127.0.0.1:``port``."""
    args = [sys.executable, "-m", "switchyard.ops", "fake-provider", "--port", str(port)]
    return args if latency_ms is None else [*args, "--latency-ms", str(latency_ms)]


def serve(port: int, profile: str, latency_ms: float | None, host: str = "127.0.0.1") -> int:
    chosen = PROFILES[profile]
    if latency_ms is not None:
        chosen = replace(chosen, latency_ms=latency_ms)
    fake = FakeProvider(chosen, port, host).start()
    print(f"fake provider ({profile}) at {fake.url}; Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    return 0
