"""``/v1/batches``: create a batch from an uploaded file (it is handed to rq at once, and
runs on a ``switchyard batch-worker``), retrieve, list (newest first, ``after`` and
``limit``) and cancel a tenant's batches."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchyard.dispatcher.batches import wire
from switchyard.dispatcher.batches.errors import BatchConflict
from switchyard.dispatcher.batches.lines import ENDPOINTS
from switchyard.dispatcher.batches.worker import enqueue_batch
from switchyard.dispatcher.gateway.calls import read_json
from switchyard.dispatcher.gateway.errors import BadRequest, GatewayError
from switchyard.dispatcher.gateway.routes_files import list_params
from switchyard.dispatcher.gateway.state import gateway_of

__all__ = ["routes"]


def _metadata(value: object) -> dict[str, str] | None:
    """OpenAI's metadata: at most 16 pairs, keys of up to 64 characters, values of 512."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()):
        raise BadRequest("metadata: at most 16 string pairs (keys up to 64 characters, "
                         "values up to 512)", "metadata")
    return dict(value)


async def create_batch(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    body: dict[str, Any] = await read_json(request, 64 * 1024)
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise BadRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}: {endpoint!r}",
                         "endpoint")
    if body.get("completion_window") != "24h":
        raise BadRequest("completion_window must be '24h'", "completion_window")
    if gw.queue is None:
        raise GatewayError(503, "server_error", "background batches need a Redis server of "
                           "their own with a Redis Cluster broker ([batch] redis_url)",
                           code="batches_unavailable")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str):
        raise BadRequest("input_file_id is required", "input_file_id")
    record = gw.files.record(tenant, file_id)
    if record.purpose != "batch":
        raise BadRequest(f"file {file_id} was not uploaded with purpose 'batch'",
                         "input_file_id")
    state = await gw.batches.create(tenant, endpoint, file_id, _metadata(body.get("metadata")),
                                    gw.config.batch.window_s)
    try:
        await asyncio.to_thread(enqueue_batch, gw.queue, gw.config, state.id)
    except Exception:  # rq's Redis is down: the batch fails at once, not hangs in limbo
        await gw.batches.move(state.id, "validating", "failed", failed_at=int(time.time()),
                              errors=[{"code": "queue_unavailable", "line": None,
                                       "message": "the batch queue could not take it",
                                       "param": None}])
        raise
    return JSONResponse(wire.batch_object(state))


async def retrieve_batch(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    state = await gw.batches.get(request.path_params["id"], gw.owner(tenant))
    return JSONResponse(wire.batch_object(state))


async def list_batches(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    after, limit, _ = list_params(request)
    states, more = await gw.batches.page(tenant, after, limit)
    return JSONResponse(wire.page([wire.batch_object(s) for s in states], more))


async def cancel_batch(request: Request) -> Response:
    """``cancelling`` (its worker stops feeding it, cancels what it admitted and ends it
    ``cancelled``); a batch that is cancelling already is answered as it is."""
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    batch_id = request.path_params["id"]
    await gw.batches.get(batch_id, gw.owner(tenant))  # (another tenant's: not found)
    moved, status = await gw.batches.move(batch_id, "validating in_progress", "cancelling",
                                          cancelling_at=int(time.time()))
    if not moved and status != "cancelling":
        raise BatchConflict(f"batch {batch_id} is {status}: it cannot be cancelled")
    return JSONResponse(wire.batch_object(await gw.batches.get(batch_id)))


routes = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{id}/cancel", cancel_batch, methods=["POST"]),
]
