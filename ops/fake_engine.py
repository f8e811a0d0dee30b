"""`switchyard fake-engine`: a local serving engine look-alike (vLLM, SGLang) for the
``served`` engine's tests and benchmarks, since neither installs here.

It models what matters to a worker in front of one: a KV-cache pool of ``blocks`` blocks
of ``block_tokens`` tokens. A request needs blocks for its prompt (a token per word) and
``max_tokens``; it is admitted (running) while at most ``max_seqs`` run and its blocks are
free, and waits in a FIFO otherwise, as a real engine's scheduler does. Running requests
produce a token every ``token_ms``. A client that disconnects aborts its request (its
blocks are freed), as vLLM does.

Endpoints: ``POST /v1/chat/completions`` (OpenAI shapes, SSE with ``stream``),
``GET /metrics`` (vLLM's names and SGLang's), ``GET /health``; ``GET /_stats`` (admission
order by each request's last message, the most that ever ran and waited, aborts).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from switchyard.ops.fake_server import BackgroundServer

__all__ = ["EngineShape", "FakeEngine", "add_parser", "command"]


@dataclass(frozen=True)
class EngineShape:
    max_seqs: int = 8
    blocks: int = 1024
    block_tokens: int = 16
    token_ms: float = 5.0
    model: str = "fake-llm"


class _Pool:
    """The scheduler: blocks, the running set and the FIFO, under one lock."""

    def __init__(self, shape: EngineShape) -> None:
        self.shape = shape
        self.lock = threading.Condition()
        self.free = shape.blocks
        self.running = 0
        self.queue: deque[int] = deque()
        self.order: list[str] = []
        self.most_running = self.most_waiting = self.aborted = self.completed = 0
        self._next = 0

    def admit(self, blocks: int, tag: str) -> None:
        """Wait for a turn (FIFO) and the blocks; then the request runs."""
        with self.lock:
            ticket = self._next
            self._next += 1
            self.queue.append(ticket)
            self.lock.notify_all()  # a blocked head counts the newcomer as waiting
            while not (self.queue[0] == ticket and self.running < self.shape.max_seqs
                       and self.free >= blocks):
                if self.queue[0] == ticket:  # the head cannot start: all queued wait
                    self.most_waiting = max(self.most_waiting, len(self.queue))
                self.lock.wait()
            self.queue.popleft()
            self.free -= blocks
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.order.append(tag)
            self.lock.notify_all()

    def leave(self, blocks: int, aborted: bool) -> None:
        with self.lock:
            self.free += blocks
            self.running -= 1
            self.aborted += aborted
            self.completed += not aborted
            self.lock.notify_all()

    def metrics(self) -> str:
        with self.lock:
            running, waiting = self.running, len(self.queue)
            used = 1 - self.free / self.shape.blocks
        label = f'{{model_name="{self.shape.model}"}}'
        return "".join([
            "# TYPE vllm:num_requests_running gauge\n",
            f'vllm:cache_config_info{{block_size="{self.shape.block_tokens}",'
            f'num_gpu_blocks="{self.shape.blocks}"}} 1.0\n',
            f"vllm:num_requests_running{label} {running}.0\n",
            f"vllm:num_requests_waiting{label} {waiting}.0\n",
            f"vllm:kv_cache_usage_perc{label} {used}\n",
            f"sglang:num_running_reqs {running}.0\n",
            f"sglang:num_queue_reqs {waiting}.0\n",
            f"sglang:token_usage {used}\n",
            f"sglang:max_total_num_tokens {self.shape.blocks * self.shape.block_tokens}\n"])

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"order": list(self.order), "most_running": self.most_running,
                    "most_waiting": self.most_waiting, "aborted": self.aborted,
                    "completed": self.completed, "running": self.running,
                    "waiting": len(self.queue)}


class FakeEngine(BackgroundServer):
    """The engine, on 127.0.0.1:``port`` (0: any free port), in a background thread."""

    def __init__(self, shape: EngineShape | None = None, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.pool = _Pool(shape or EngineShape())
        super().__init__(_handler(self.pool), port, host)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(pool: _Pool) -> type[BaseHTTPRequestHandler]:
    return type("FakeEngineHandler", (_Handler,), {"pool": pool})


class _Handler(BaseHTTPRequestHandler):
    pool: _Pool
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, self.pool.metrics().encode(), "text/plain; version=0.0.4")
        elif self.path == "/health":
            self._send(200, b"", "text/plain")
        elif self.path == "/_stats":
            self._send(200, json.dumps(self.pool.stats()).encode(), "application/json")
        else:
            self._send(404, b"{}", "application/json")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            self._send(404, b'{"error": {"message": "no such route"}}', "application/json")
            return
        messages = body.get("messages") or [{"content": ""}]
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        tokens = int(body.get("max_tokens") or 16)
        shape = self.pool.shape
        blocks = math.ceil((prompt + tokens) / shape.block_tokens)
        if blocks > shape.blocks:
            self._send(400, b'{"error": {"message": "prompt too long"}}', "application/json")
            return
        self.pool.admit(blocks, str(messages[-1].get("content", "")))
        aborted = True
        try:
            words = [f"w{i + 1}" for i in range(tokens)]
            if body.get("stream"):
                self._stream(words, prompt)
            else:
                time.sleep(shape.token_ms * tokens / 1000)
                self._send(200, json.dumps(_completion(" ".join(words), prompt, tokens))
                           .encode(), "application/json")
            aborted = False
        except OSError:  # the client went away: abort
            pass
        finally:
            self.pool.leave(blocks, aborted)

    def _stream(self, words: list[str], prompt: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i, word in enumerate(words):
            time.sleep(self.pool.shape.token_ms / 1000)
            delta = {"choices": [{"index": 0, "delta": {"content": word if i == 0
                                                        else f" {word}"}}]}
            self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
            self.wfile.flush()
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
               "usage": {"prompt_tokens": prompt, "completion_tokens": len(words)}}
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self.close_connection = True

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _completion(text: str, prompt: int, tokens: int) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": tokens}}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fake-engine", help="a fake vLLM/SGLang server with a KV-cache pool")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-seqs", type=int, default=8)
    p.add_argument("--blocks", type=int, default=1024)
    p.add_argument("--block-tokens", type=int, default=16)
    p.add_argument("--token-ms", type=float, default=5.0)
    p.set_defaults(handler=lambda ns: serve(ns.port, EngineShape(
        ns.max_seqs, ns.blocks, ns.block_tokens, ns.token_ms)))


def command(port: int, shape: EngineShape) -> list[str]:
    """The command line of a fake engine in its own process, on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "switchyard.ops", "fake-engine", "--port", str(port),
            "--max-seqs", str(shape.max_seqs), "--blocks", str(shape.blocks),
            "--block-tokens", str(shape.block_tokens), "--token-ms", str(shape.token_ms)]


def serve(port: int, shape: EngineShape) -> int:
    engine = FakeEngine(shape, port).start()
    print(f"fake engine at {engine.url} ({shape}); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        engine.stop()
    return 0
