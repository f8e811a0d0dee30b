"""`switchyard submit`: enqueue a job from the shell and print its result as JSON (or, for
``submit chat --stream``, the text as it is generated)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import cast

from switchyard.broker.config import load_config
from switchyard.broker.schemas import Priority
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.jobs import AnyResult, AsyncJob

__all__ = ["ChatOptions", "SubmitOptions", "add_parser", "submit"]


@dataclass(frozen=True)
class ChatOptions:
    max_tokens: int = 256
    temperature: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False


@dataclass(frozen=True)
class SubmitOptions:
    model: str
    texts: list[str]
    priority: Priority = "standard"
    deadline_s: float | None = None
    idempotency_key: str | None = None
    wait: bool = True
    timeout_s: float | None = None
    config: str | None = None
    redis_url: str | None = None
    chat: ChatOptions | None = None
    """Set for `submit chat` (the texts are one user message); None for `submit embed`."""
    durable: bool = False


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit_p = sub.add_parser("submit", help="enqueue a job and print its result")
    kinds = submit_p.add_subparsers(dest="kind", required=True, metavar="KIND")
    embed = kinds.add_parser("embed", help="embed one or more texts")
    embed.add_argument("texts", nargs="+", metavar="TEXT")
    _common(embed)
    embed.set_defaults(handler=lambda ns: submit(_options(ns, None)))
    chat = kinds.add_parser("chat", help="generate a reply to TEXT (one user message)")
    chat.add_argument("texts", nargs="+", metavar="TEXT")
    chat.add_argument("--stream", action="store_true", help="print the text as it is generated")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=1.0, help="0: greedy decoding")
    chat.add_argument("--seed", type=int)
    chat.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    _common(chat)
    chat.set_defaults(handler=lambda ns: submit(_options(ns, ChatOptions(
        ns.max_tokens, ns.temperature, ns.seed, ns.stop, ns.stream))))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--priority", default="standard", choices=["interactive", "standard", "batch"])
    p.add_argument("--deadline", type=float, help="seconds the job may wait before it expires")
    p.add_argument("--idempotency-key")
    p.add_argument("--durable", action="store_true",
                   help="return only once the job is on disk in Redis's AOF")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--timeout", type=float, help="seconds to wait for the result")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--redis-url", help="overrides [redis] url")


def _options(ns: argparse.Namespace, chat: ChatOptions | None) -> SubmitOptions:
    return SubmitOptions(
        model=ns.model, texts=ns.texts, priority=cast(Priority, ns.priority),
        deadline_s=ns.deadline, idempotency_key=ns.idempotency_key, wait=not ns.no_wait,
        timeout_s=ns.timeout, config=ns.config, redis_url=ns.redis_url, chat=chat,
        durable=ns.durable,
    )


def submit(options: SubmitOptions) -> int:
    print(asyncio.run(_submit(options)))
    return 0


async def _submit(options: SubmitOptions) -> str:
    async with AsyncClient(load_config(options.config), redis_url=options.redis_url) as client:
        job: AsyncJob[AnyResult]
        chat = options.chat
        if chat is None:
            job = await client.embed(
                options.model, options.texts, priority=options.priority,
                deadline_s=options.deadline_s, idempotency_key=options.idempotency_key,
                durable=options.durable)
        else:
            job = await client.chat(
                options.model, [{"role": "user", "content": " ".join(options.texts)}],
                max_tokens=chat.max_tokens, temperature=chat.temperature, seed=chat.seed,
                stop=chat.stop, stream=chat.stream, priority=options.priority,
                deadline_s=options.deadline_s, idempotency_key=options.idempotency_key,
                durable=options.durable)
        if not options.wait:
            return json.dumps({"job_id": job.id, "position": job.position})
        if chat is not None and chat.stream:
            async for delta in job.stream(options.timeout_s):
                sys.stdout.write(delta)
                sys.stdout.flush()
            return ""
        result = await job.result(options.timeout_s)
        return json.dumps({"job_id": job.id, **result.model_dump(mode="json")})
