"""OpenAI chat completions and embeddings; also any OpenAI-compatible host (vLLM, TGI,
hosted ones) by ``base_url``."""

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
    status_error,
    stream_chat,
    transport_error,
)

__all__ = ["OpenAIProvider"]


class _Parser:
    def __init__(self, provider: str) -> None:
        self._provider = provider
        self.finish = "stop"
        self.usage = (0, 0)
        self.finished = False

    def feed(self, event: str, data: str) -> str | None:
        if data == "[DONE]":
            self.finished = True
            return None
        chunk = json.loads(data)
        if "error" in chunk:
            raise ProviderError(f"{self._provider} stream error: {chunk['error']}",
                                retry_elsewhere=True)
        usage = chunk.get("usage")
        if usage:
            self.usage = (int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)))
        text = None
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") or text
            if choice.get("finish_reason"):
                self.finish = "length" if choice["finish_reason"] == "length" else "stop"
        return text

    def result(self, text: str) -> Completion:
        return Completion(text, self.finish, *self.usage)


class OpenAIProvider:
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        key = api_key(config)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client: httpx.AsyncClient = http_client(config, headers)

    async def chat(self, model: str, messages: Sequence[ChatMessage], params: dict[str, Any],
                   on_text: OnText, first_timeout_s: float) -> Completion:
        body = {"model": model, "messages": [m.model_dump() for m in messages], "stream": True,
                "stream_options": {"include_usage": True}, **params}
        return await stream_chat(self._client, self.name, "chat/completions", body,
                                 _Parser(self.name), on_text, first_timeout_s)

    async def embed(self, model: str, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        try:
            response = await self._client.post("embeddings", json={"model": model,
                                                                   "input": list(texts)})
        except httpx.HTTPError as exc:
            raise transport_error(self.name, exc, after_text=False) from None
        if response.status_code >= 400:
            raise status_error(self.name, response, response.text)
        body = response.json()
        rows = sorted(body["data"], key=lambda row: row["index"])
        return [row["embedding"] for row in rows], int(body.get("usage", {}).get(
            "prompt_tokens", 0))

    async def aclose(self) -> None:
        await self._client.aclose()
