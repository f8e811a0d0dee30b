"""`switchyard submit`: enqueue a job from the shell and print its result as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from typing import cast

from broker.config import load_config
from broker.schemas import Priority
from dispatcher.client import AsyncClient

__all__ = ["SubmitOptions", "add_parser", "submit"]


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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit_p = sub.add_parser("submit", help="enqueue a job and print its result")
    kinds = submit_p.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = kinds.add_parser("embed", help="embed one or more texts")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--model", required=True)
    p.add_argument("--priority", default="standard", choices=["interactive", "standard", "batch"])
    p.add_argument("--deadline", type=float, help="seconds the job may wait before it expires")
    p.add_argument("--idempotency-key")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--timeout", type=float, help="seconds to wait for the result")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--redis-url", help="overrides [redis] url")
    p.set_defaults(handler=lambda ns: submit(SubmitOptions(
        model=ns.model, texts=ns.texts, priority=cast(Priority, ns.priority),
        deadline_s=ns.deadline, idempotency_key=ns.idempotency_key, wait=not ns.no_wait,
        timeout_s=ns.timeout, config=ns.config, redis_url=ns.redis_url,
    )))


def submit(options: SubmitOptions) -> int:
    print(asyncio.run(_submit(options)))
    return 0


async def _submit(options: SubmitOptions) -> str:
    async with AsyncClient(load_config(options.config), redis_url=options.redis_url) as client:
        job = await client.embed(
            options.model, options.texts, priority=options.priority,
            deadline_s=options.deadline_s, idempotency_key=options.idempotency_key,
        )
        if not options.wait:
            return json.dumps({"job_id": job.id, "position": job.position})
        result = await job.result(options.timeout_s)
        return json.dumps({"job_id": job.id, **result.model_dump(mode="json")})
