"""What every route does with a call: read the body within the limit, the caller's
priority and deadline, ``Prefer: respond-async``, the job's headers, and the watch that
cancels a job whose caller went away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from starlette.requests import Request

from switchyard.broker.schemas import PRIORITIES, TRACEPARENT, ChatResult, Priority
from switchyard.dispatcher.gateway.errors import (
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    http_error,
)
from switchyard.dispatcher.gateway.openai_wire import ChatArgs
from switchyard.dispatcher.gateway.state import Gateway
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.dispatcher.submissions import chat_submission

__all__ = [
    "Caller",
    "StreamWatch",
    "admit_chat",
    "caller",
    "cancel_in_background",
    "keepalive",
    "read_json",
    "trace_of",
    "until_disconnected",
    "wants_async",
    "watch",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    tenant: str | None
    priority: Priority
    deadline_s: float | None
    trace: str | None = None
    """The request's W3C ``traceparent`` (see :func:`trace_of`)."""


_TRACEPARENT = re.compile(TRACEPARENT)


def trace_of(request: Request) -> str:
    """The request's ``traceparent`` header when it is a valid W3C one (version 00, ids
    not all zeros), else a new one; kept in the request's state for its log line."""
    given = request.headers.get("traceparent", "").strip().lower()
    if (_TRACEPARENT.match(given) and not given.startswith("ff")
            and given[3:35] != "0" * 32 and given[36:52] != "0" * 16):
        trace = given
    else:
        trace = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    request.state.traceparent = trace
    return trace


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes (counted as they come, whatever
    Content-Length says), 400 if it is not a JSON object."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def caller(request: Request, tenant: str | None, tier: Priority | None,
           model: str) -> Caller:
    """The caller of a job on ``model`` (named in the request log): the priority
    (``X-Switchyard-Priority``, else the body's tier, else standard) and the deadline
    (``X-Switchyard-Deadline``, seconds; else the priority's default)."""
    request.state.model = model
    priority = request.headers.get("x-switchyard-priority") or tier or "standard"
    if priority not in PRIORITIES:
        raise BadRequest(f"X-Switchyard-Priority must be one of {', '.join(PRIORITIES)}",
                         "x-switchyard-priority")
    raw = request.headers.get("x-switchyard-deadline")
    deadline = None
    if raw is not None:
        try:
            deadline = float(raw)
        except ValueError:
            raise BadRequest("X-Switchyard-Deadline is a number of seconds",
                             "x-switchyard-deadline") from None
    return Caller(tenant, priority, deadline, trace_of(request))


def wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.split(","))


async def until_disconnected(request: Request) -> None:
    """Returns once the caller has gone (the body must have been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def watch(request: Request, job: AsyncJob[Any], work: Awaitable[T],
                tasks: set[asyncio.Task[Any]]) -> T | None:
    """``work``, unless the caller goes first: then the job is cancelled, and None. (One
    task a call, the one listening for the disconnect; it cancels this one's await.)"""
    current = asyncio.current_task()
    assert current is not None
    gone = asyncio.get_running_loop().create_task(until_disconnected(request))
    left = False

    def leave(listener: asyncio.Task[None]) -> None:
        nonlocal left
        if not listener.cancelled() and listener.exception() is None:
            left = True
            current.cancel()

    gone.add_done_callback(leave)
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        current.uncancel()
        cancel_in_background(job, tasks)
        return None
    finally:
        gone.remove_done_callback(leave)
        gone.cancel()


def cancel_in_background(job: AsyncJob[Any], tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel the job from a task of its own (the caller's task is being torn down)."""
    async def cancel() -> None:
        with contextlib.suppress(Exception):
            await job.cancel()

    task = asyncio.get_running_loop().create_task(cancel())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def keepalive(texts: AsyncIterator[str], interval_s: float) -> AsyncIterator[str | None]:
    """The texts, with a None every ``interval_s`` that none came (a keepalive is due)."""
    pending: asyncio.Future[str] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(texts))
            done, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not done:
                yield None
                continue
            try:
                text = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield text
    finally:
        if pending is not None:
            pending.cancel()


async def admit_chat(gw: Gateway, request: Request, tenant: str | None, args: ChatArgs
                     ) -> tuple[AsyncJob[ChatResult], Caller]:
    """The caller's chat job, admitted (never retried here: the caller's SDK retries)."""
    who = caller(request, tenant, args.tier, args.model)
    submission = chat_submission(
        gw.config.limits, args.model, args.messages, max_tokens=args.max_tokens,
        temperature=args.temperature, top_p=args.top_p, stop=args.stop, seed=args.seed,
        stream=args.stream, priority=who.priority, deadline_s=who.deadline_s,
        idempotency_key=None, tenant=tenant, durable=False)
    job = await gw.client.submit(replace(submission, trace=who.trace), ChatResult, 0)
    return job, who


class StreamWatch:
    """One streamed job's texts (with keepalives: None), its time to first text, and its
    end: a stream that stops before it ended (the server cancels it when the caller goes)
    counts as abandoned and cancels its job."""

    def __init__(self, gw: Gateway, job: AsyncJob[ChatResult], route: str) -> None:
        self.gw, self.job, self.route = gw, job, route
        self.sent = 0
        self.ended = False
        self._started = time.monotonic()

    async def texts(self) -> AsyncIterator[str | None]:
        async for text in keepalive(self.job.stream(), self.gw.config.gateway.keepalive_s):
            if text is not None:
                if not self.sent:
                    self.gw.metrics.ttft.labels(self.route).observe(
                        time.monotonic() - self._started)
                self.sent += 1
            yield text

    def failed(self, exc: Exception) -> GatewayError:
        """The error a stream that had begun ends with (in its API's own shape)."""
        self.ended = True
        return http_error(exc, self.gw.config.gateway.max_retry_after_s)

    def close(self) -> None:
        if not self.ended:
            self.gw.metrics.abandoned.labels(self.route).inc()
            self.gw.metrics.wasted_tokens.labels(self.route).inc(self.sent)
            cancel_in_background(self.job, self.gw.tasks)
