"""The Anthropic surface: ``POST /v1/messages``, streamed or not. Wire format in
``anthropic_wire.py``; errors in Anthropic's shape (``errors.anthropic_body``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from switchyard.broker.schemas import ChatResult
from switchyard.dispatcher.gateway import anthropic_wire as wire
from switchyard.dispatcher.gateway.calls import (
    caller,
    cancel_in_background,
    keepalive,
    read_json,
    wants_async,
    watch,
)
from switchyard.dispatcher.gateway.errors import anthropic_body, http_error
from switchyard.dispatcher.gateway.jobs_view import accepted, job_headers
from switchyard.dispatcher.gateway.state import Gateway, gateway_of, sse
from switchyard.dispatcher.jobs import AsyncJob

__all__ = ["ROUTE", "routes"]

ROUTE = "/v1/messages"


async def messages(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    args = wire.messages_args(await read_json(request, gw.body_limit))
    request.state.model = args.model
    who = caller(request, tenant, args.tier)
    job = await gw.client.chat(
        args.model, args.messages, max_tokens=args.max_tokens, temperature=args.temperature,
        top_p=args.top_p, stop=args.stop, stream=args.stream, priority=who.priority,
        deadline_s=who.deadline_s, tenant=tenant, max_retries=0)
    if wants_async(request):
        return accepted(job)
    if args.stream:
        return StreamingResponse(_stream(gw, job, args), media_type="text/event-stream",
                                 headers={**job_headers(job), "cache-control": "no-cache"})
    result = await watch(request, job, job.result(), gw.tasks)
    if result is None:
        gw.metrics.abandoned.labels(ROUTE).inc()
        return Response(status_code=499)
    return JSONResponse(wire.message(job.id, args.model, result), headers=job_headers(job))


async def _stream(gw: Gateway, job: AsyncJob[ChatResult], args: wire.MessagesArgs
                  ) -> AsyncIterator[bytes]:
    """Anthropic's event sequence; a failure after the start is an ``error`` event."""
    started, ended, sent = time.monotonic(), False, 0
    estimate = sum(len(m["content"]) for m in args.messages) // 4 + 1
    try:
        for event, data in wire.stream_start(job.id, args.model, estimate):
            yield sse(data, event)
        async for text in keepalive(job.stream(), gw.config.gateway.keepalive_s):
            if text is None:
                yield sse({"type": "ping"}, "ping")
                continue
            if not sent:
                gw.metrics.ttft.labels(ROUTE).observe(time.monotonic() - started)
            sent += 1
            event, data = wire.text_delta(text)
            yield sse(data, event)
        result = await job.result()
        ended = True
        for event, data in wire.stream_end(result):
            yield sse(data, event)
    except Exception as exc:  # the stream has started: the error goes in it
        ended = True
        yield sse(anthropic_body(http_error(exc, gw.config.gateway.max_retry_after_s)), "error")
    finally:
        if not ended:
            gw.metrics.abandoned.labels(ROUTE).inc()
            gw.metrics.wasted_tokens.labels(ROUTE).inc(sent)
            cancel_in_background(job, gw.tasks)


routes = [Route(ROUTE, messages, methods=["POST"])]
