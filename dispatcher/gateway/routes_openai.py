"""The OpenAI surface: ``/v1/chat/completions`` (streamed or not), ``/v1/embeddings``,
``/v1/models``. Wire formats in ``openai_wire.py``, errors in ``errors.py``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from switchyard.broker.schemas import ChatResult
from switchyard.dispatcher.gateway import openai_wire as wire
from switchyard.dispatcher.gateway.calls import (
    Caller,
    caller,
    cancel_in_background,
    keepalive,
    read_json,
    wants_async,
    watch,
)
from switchyard.dispatcher.gateway.errors import GatewayError, http_error, openai_body
from switchyard.dispatcher.gateway.jobs_view import accepted, job_headers
from switchyard.dispatcher.gateway.state import Gateway, gateway_of, sse
from switchyard.dispatcher.jobs import AsyncJob

__all__ = ["routes"]


async def chat_completions(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    args = wire.chat_args(await read_json(request, gw.body_limit))
    request.state.model = args.model
    who = caller(request, tenant, args.tier)
    job = await gw.client.chat(
        args.model, args.messages, max_tokens=args.max_tokens, temperature=args.temperature,
        top_p=args.top_p, stop=args.stop, seed=args.seed, stream=args.stream,
        priority=who.priority, deadline_s=who.deadline_s, tenant=tenant, max_retries=0)
    if wants_async(request):
        return accepted(job)
    if args.stream:
        return StreamingResponse(_stream(gw, job, args, who), media_type="text/event-stream",
                                 headers={**job_headers(job), "cache-control": "no-cache"})
    result = await watch(request, job, job.result(), gw.tasks)
    if result is None:
        gw.metrics.abandoned.labels("/v1/chat/completions").inc()
        return Response(status_code=499)
    return JSONResponse(wire.chat_completion(job.id, args.model, result, who.priority),
                        headers=job_headers(job))


async def _stream(gw: Gateway, job: AsyncJob[ChatResult], args: wire.ChatArgs,
                  who: Caller) -> AsyncIterator[bytes]:
    """The chunks; a failure after the start is an ``error`` payload, never ``[DONE]``; a
    caller that goes away (the server cancels this) cancels the job."""
    created, started, ended = int(time.time()), time.monotonic(), False
    route = "/v1/chat/completions"

    def chunk(**kw: Any) -> bytes:
        return sse(wire.chat_chunk(job.id, args.model, created, who.priority, **kw))

    sent = 0
    try:
        yield chunk(role=True, text="")
        async for text in keepalive(job.stream(), gw.config.gateway.keepalive_s):
            if text is None:
                yield b": keepalive\n\n"
                continue
            if not sent:
                gw.metrics.ttft.labels(route).observe(time.monotonic() - started)
            sent += 1
            yield chunk(text=text)
        result = await job.result()
        yield chunk(finish=result.finish_reason)
        if args.include_usage:
            yield sse(wire.usage_chunk(job.id, args.model, created, who.priority, result))
        ended = True
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # the stream has started: the error goes in it
        ended = True
        error: GatewayError = http_error(exc, gw.config.gateway.max_retry_after_s)
        yield sse(openai_body(error))
    finally:
        if not ended:
            gw.metrics.abandoned.labels(route).inc()
            gw.metrics.wasted_tokens.labels(route).inc(sent)
            cancel_in_background(job, gw.tasks)


async def embeddings(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    args = wire.embed_args(await read_json(request, gw.body_limit))
    request.state.model = args.model
    who = caller(request, tenant, args.tier)
    job = await gw.client.embed(args.model, args.texts, priority=who.priority,
                                deadline_s=who.deadline_s, tenant=tenant, max_retries=0)
    if wants_async(request):
        return accepted(job)
    result = await watch(request, job, job.result(), gw.tasks)
    if result is None:
        gw.metrics.abandoned.labels("/v1/embeddings").inc()
        return Response(status_code=499)
    return JSONResponse(wire.embeddings(result, args.model, args.base64, args.dimensions),
                        headers=job_headers(job))


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


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
          Route("/v1/embeddings", embeddings, methods=["POST"]),
          Route("/v1/models", models, methods=["GET"]),
          Route("/v1/models/{model_id:path}", model, methods=["GET"])]
