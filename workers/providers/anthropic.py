"""Anthropic messages (streaming). System messages go to the top-level ``system``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from switchyard.broker.config import ProviderConfig
from switchyard.broker.schemas import ChatMessage
from switchyard.workers.providers.base import (
    Completion,
    OnText,
    ProviderError,
    api_key,
    http_client,
    stream_chat,
)

__all__ = ["AnthropicProvider"]

VERSION = "2023-06-01"


class _Parser:
    def __init__(self, provider: str) -> None:
        self._provider = provider
        self.finish = "stop"
        self.input_tokens = self.output_tokens = 0
        self.finished = False

    def feed(self, event: str, data: str) -> str | None:
        body = json.loads(data)
        kind = body.get("type", event)
        if kind == "error":
            error = body.get("error") or {}
            overloaded = error.get("type") == "overloaded_error"
            raise ProviderError(f"{self._provider} stream error: {error.get('message', error)}",
                                status=529 if overloaded else None, retry_elsewhere=True)
        if kind == "message_stop":
            self.finished = True
        elif kind == "message_start":
            usage = body.get("message", {}).get("usage", {})
            self.input_tokens = int(usage.get("input_tokens", 0))
        elif kind == "message_delta":
            stop = (body.get("delta") or {}).get("stop_reason")
            self.finish = "length" if stop == "max_tokens" else "stop"
            self.output_tokens = int((body.get("usage") or {}).get("output_tokens", 0))
        elif kind == "content_block_delta":
            delta = body.get("delta") or {}
            return str(delta.get("text") or "") or None
        return None

    def result(self, text: str) -> Completion:
        return Completion(text, self.finish, self.input_tokens, self.output_tokens)


class AnthropicProvider:
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        key = api_key(config)
        headers = {"anthropic-version": VERSION, **({"x-api-key": key} if key else {})}
        self._client: httpx.AsyncClient = http_client(config, headers)

    async def chat(self, model: str, messages: Sequence[ChatMessage], params: dict[str, Any],
                   on_text: OnText, first_timeout_s: float) -> Completion:
        system = "\n".join(m.content for m in messages if m.role == "system")
        body: dict[str, Any] = {
            "model": model, "stream": True,
            "messages": [m.model_dump() for m in messages if m.role != "system"],
            "max_tokens": params["max_tokens"],
            **{k: v for k, v in params.items() if k in ("temperature", "top_p")},
        }
        if params.get("stop"):
            body["stop_sequences"] = params["stop"]
        if system:
            body["system"] = system
        return await stream_chat(self._client, self.name, "messages", body,
                                 _Parser(self.name), on_text, first_timeout_s)

    async def embed(self, model: str, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        raise ProviderError(f"{self.name} (Anthropic) has no embeddings API",
                            status=404, retry_elsewhere=False)

    async def aclose(self) -> None:
        await self._client.aclose()
