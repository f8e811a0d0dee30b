"""The Anthropic surface: ``POST /v1/messages``, streamed or not. Wire format in
``anthropic_wire.py``; errors in Anthropic's shape (``errors.anthropic_body``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.broker.schemas import ChatResult
from switchyard.dispatcher.gateway import anthropic_wire as wire
from switchyard.dispatcher.gateway.calls import StreamWatch, admit_chat, read_json
from switchyard.dispatcher.gateway.errors import anthropic_body
from switchyard.dispatcher.gateway.jobs_view import respond
from switchyard.dispatcher.gateway.openai_wire import ChatArgs
from switchyard.dispatcher.gateway.state import Gateway, gateway_of, sse
from switchyard.dispatcher.jobs import AsyncJob

__all__ = ["ROUTE", "routes"]

ROUTE = "/v1/messages"


async def messages(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)  # before the body is read
    args = wire.messages_args(await read_json(request, gw.body_limit))
    job, _ = await admit_chat(gw, request, tenant, args)

    def render(result: ChatResult) -> dict[str, Any]:
        return wire.message(job.id, args.model, result)

    return await respond(request, gw, job, ROUTE, render,
                         _stream(gw, job, args) if args.stream else None)


async def _stream(gw: Gateway, job: AsyncJob[ChatResult], args: ChatArgs
                  ) -> AsyncIterator[bytes]:
    """Anthropic's event sequence; a failure after the start is an ``error`` event."""
    stream = StreamWatch(gw, job, ROUTE)
    estimate = sum(len(m["content"]) for m in args.messages) // 4 + 1
    try:
        for event, data in wire.stream_start(job.id, args.model, estimate):
            yield sse(data, event)
        async for text in stream.texts():
            event, data = ("ping", {"type": "ping"}) if text is None else wire.text_delta(text)
            yield sse(data, event)
        result = await job.result()
        stream.ended = True
        for event, data in wire.stream_end(result):
            yield sse(data, event)
    except Exception as exc:  # the stream has started: the error goes in it
        yield sse(anthropic_body(stream.failed(exc)), "error")
    finally:
        stream.close()


routes = [Route(ROUTE, messages, methods=["POST"])]
