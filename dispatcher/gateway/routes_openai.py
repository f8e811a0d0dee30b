"""The OpenAI surface: ``/v1/chat/completions`` (streamed or not), ``/v1/embeddings``,
``/v1/models``. Wire formats in ``openai_wire.py``, errors in ``errors.py``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchyard.broker.schemas import ChatResult, EmbedResult
from switchyard.dispatcher.gateway import openai_wire as wire
from switchyard.dispatcher.gateway.calls import (
    Caller,
    StreamWatch,
    admit_chat,
    caller,
    read_json,
)
from switchyard.dispatcher.gateway.errors import GatewayError, openai_body
from switchyard.dispatcher.gateway.jobs_view import respond
from switchyard.dispatcher.gateway.state import Gateway, gateway_of, sse
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.dispatcher.submissions import embed_submission

__all__ = ["routes"]

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


async def chat_completions(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)  # before the body is read
    args = wire.chat_args(await read_json(request, gw.body_limit))
    job, who = await admit_chat(gw, request, tenant, args)

    def render(result: ChatResult) -> dict[str, Any]:
        return wire.chat_completion(job.id, args.model, result, who.priority)

    return await respond(request, gw, job, CHAT, render,
                         _stream(gw, job, args, who) if args.stream else None)


async def _stream(gw: Gateway, job: AsyncJob[ChatResult], args: wire.ChatArgs,
                  who: Caller) -> AsyncIterator[bytes]:
    """The chunks; a failure after the start is an ``error`` payload, never ``[DONE]``."""
    created, stream = int(time.time()), StreamWatch(gw, job, CHAT)

    def chunk(**kw: Any) -> bytes:
        return sse(wire.chat_chunk(job.id, args.model, created, who.priority, **kw))

    try:
        yield chunk(role=True, text="")
        async for text in stream.texts():
            yield b": keepalive\n\n" if text is None else chunk(text=text)
        result = await job.result()
        yield chunk(finish=result.finish_reason)
        if args.include_usage:
            yield sse(wire.usage_chunk(job.id, args.model, created, who.priority, result))
        stream.ended = True
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # the stream has started: the error goes in it
        yield sse(openai_body(stream.failed(exc)))
    finally:
        stream.close()


async def embeddings(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    args = wire.embed_args(await read_json(request, gw.body_limit))
    who = caller(request, tenant, args.tier, args.model)
    submission = embed_submission(gw.config.limits, args.model, args.texts, who.priority,
                                  who.deadline_s, None, tenant, False)
    job = await gw.client.submit(replace(submission, trace=who.trace), EmbedResult, 0)

    def render(result: EmbedResult) -> dict[str, Any]:
        return wire.embeddings(result, args.model, args.base64, args.dimensions)

    return await respond(request, gw, job, EMBEDDINGS, render)


async def models(request: Request) -> Response:
    gw = gateway_of(request)
    await gw.tenant(request)
    return JSONResponse({"object": "list",
                         "data": [_model(name) for name in sorted(gw.config.models)]})


async def model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    gw = gateway_of(request)
    await gw.tenant(request)
    if model_id not in gw.config.models:
        raise GatewayError(404, "invalid_request_error", f"the model {model_id!r} does not "
                           "exist", code="model_not_found", param="model")
    return JSONResponse(_model(model_id))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "switchyard"}


routes = [Route(CHAT, chat_completions, methods=["POST"]),
          Route(EMBEDDINGS, embeddings, methods=["POST"]),
          Route("/v1/models", models, methods=["GET"]),
          Route("/v1/models/{model_id:path}", model, methods=["GET"])]
