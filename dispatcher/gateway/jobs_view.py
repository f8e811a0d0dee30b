"""Jobs over HTTP: ``Prefer: respond-async`` answers, ``GET /v1/jobs/{id}``,
``GET /v1/jobs/{id}/events`` and ``DELETE /v1/jobs/{id}``. A tenant sees only its own
jobs: another tenant's id reads as not found (404), exactly as an id that never existed.

``/events`` sends the outcome (``event: outcome``), with keepalive comments while the job
runs, from any gateway process: text deltas reach only the reply stream of the process
that admitted the job, so a stream of them is served on the admitting call itself (``stream:
true``), not here. Reconnecting with ``Last-Event-ID: outcome`` ends at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from switchyard.broker.errors import JobIdError
from switchyard.broker.jobs import JobRecord
from switchyard.broker.schemas import ChatResult, EmbedResult
from switchyard.dispatcher.errors import JobNotFound, ResultTimeout
from switchyard.dispatcher.gateway.calls import wants_async, watch
from switchyard.dispatcher.gateway.errors import http_error
from switchyard.dispatcher.gateway.state import Gateway, gateway_of, sse
from switchyard.dispatcher.jobs import AsyncJob

R = TypeVar("R", bound=EmbedResult | ChatResult)

__all__ = ["accepted", "job_headers", "respond", "routes"]


def job_headers(job: AsyncJob[Any]) -> dict[str, str]:
    return {"x-request-id": job.id}


def accepted(job: AsyncJob[Any]) -> Response:
    """202 for ``Prefer: respond-async``: the job's id, and where to ask for it."""
    body = {"id": job.id, "object": "job", "status": "queued", "position": job.position,
            "estimated_start_s": job.estimated_start_s}
    return JSONResponse(body, status_code=202, headers={
        **job_headers(job), "location": f"/v1/jobs/{job.id}", "preference-applied":
        "respond-async"})


async def respond(request: Request, gw: Gateway, job: AsyncJob[R], route: str,
                  render: Callable[[R], dict[str, Any]],
                  stream: AsyncIterator[bytes] | None = None) -> Response:
    """The answer to an admitted job: 202 for ``Prefer: respond-async``; the stream; else
    its result rendered, or 499 when the caller went first (its job is cancelled)."""
    if wants_async(request):
        return accepted(job)
    if stream is not None:
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={**job_headers(job), "cache-control": "no-cache"})
    result = await watch(request, job, job.result(), gw.tasks)
    if result is None:
        gw.metrics.abandoned.labels(route).inc()
        return Response(status_code=499)
    return JSONResponse(render(result), headers=job_headers(job))


def _view(job_id: str, record: JobRecord) -> dict[str, Any]:
    outcome = record.outcome
    return {"id": job_id, "object": "job", "status": record.state.value,
            "result": None if outcome is None or outcome.result is None
            else outcome.result.model_dump(mode="json"),
            "error": None if outcome is None or outcome.error is None
            else outcome.error.model_dump(mode="json")}


async def _job(request: Request, job_id: str) -> tuple[AsyncJob[Any], JobRecord]:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    try:
        job = gw.client.job(job_id, tenant=tenant)
    except JobIdError:
        raise JobNotFound(f"no job {job_id!r}") from None
    return job, await job.record()


async def get_job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    job, record = await _job(request, job_id)
    return JSONResponse(_view(job_id, record), headers=job_headers(job))


async def cancel_job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    job, _ = await _job(request, job_id)
    cancelled = await job.cancel()
    body = {**_view(job_id, await job.record()), "cancelled": cancelled}
    return JSONResponse(body, headers=job_headers(job))


async def job_events(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    job, record = await _job(request, job_id)
    gw = gateway_of(request)
    if request.headers.get("last-event-id") == "outcome":
        return Response(status_code=204, headers=job_headers(job))

    async def events() -> AsyncIterator[bytes]:
        latest = record
        while not latest.ended:
            try:
                await job.outcome(timeout=gw.config.gateway.keepalive_s)
            except ResultTimeout:
                yield b": keepalive\n\n"
            except Exception as exc:
                yield sse({"error": http_error(exc, 1.0).message}, "error")
                return
            latest = await job.record()
        yield b"id: outcome\n" + sse(_view(job_id, latest), "outcome")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={**job_headers(job), "cache-control": "no-cache"})


routes = [Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
          Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
          Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"])]
