"""The gateway's ASGI app: one async client per process, the route families, errors
mapped in one place, request logs without prompts or keys, and the health endpoints.

    uvicorn --factory switchyard.dispatcher.gateway.app:from_environment

(``switchyard gateway`` does this, with uvloop and httptools.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchyard.broker import heap, logs
from switchyard.broker.apikeys import ApiKeyStore
from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import SwitchyardError
from switchyard.dispatcher.batches.files import FileStore
from switchyard.dispatcher.batches.records import BatchRecords
from switchyard.dispatcher.batches.worker import rq_queue
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.gateway import (
    jobs_view,
    routes_anthropic,
    routes_batches,
    routes_files,
    routes_openai,
)
from switchyard.dispatcher.gateway.auth import Authenticator
from switchyard.dispatcher.gateway.errors import (
    GatewayError,
    anthropic_body,
    anthropic_status,
    http_error,
    openai_body,
)
from switchyard.dispatcher.gateway.metrics import GatewayMetrics
from switchyard.dispatcher.gateway.state import Gateway, gateway_of

__all__ = ["create_app", "from_environment"]

log = logging.getLogger("switchyard.gateway")

REDIS_URL_ENV = "SWITCHYARD_GATEWAY_REDIS_URL"
"""Where ``switchyard gateway --redis-url`` hands the URL to its worker processes."""


def from_environment() -> Starlette:
    """The app of a gateway process: config from ``SWITCHYARD_CONFIG`` (and overrides);
    its request log on stderr, one line a request."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logs.formatter() if logs.log_format() == "json" else
                             logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return create_app(load_config(), redis_url=os.environ.get(REDIS_URL_ENV) or None,
                      settle_heap=True)


def create_app(config: SwitchyardConfig, *, redis_url: str | None = None,
               settle_heap: bool = False) -> Starlette:
    """Plain Starlette routes (no FastAPI layer: its request handling cost the gateway
    about a quarter of its CPU under load, see docs/architecture.md). ``settle_heap``: a
    gateway process of its own, whose garbage collector is Switchyard's to set once it
    has started (see ``broker/heap.py``)."""
    metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = AsyncClient(config, redis_url=redis_url)
        gateway = Gateway(
            config, client, Authenticator(config, ApiKeyStore(client.redis, client.keys)),
            metrics, FileStore.for_config(config),
            BatchRecords(client.redis, client.keys, client.scripts,
                         config.batch.file_retention_s),
            rq_queue(config, client.settings.url))
        try:
            await gateway.auth.check_startable()
            app.state.gateway = gateway
            if settle_heap:
                heap.settle()
            yield
        finally:
            if gateway.tasks:
                await asyncio.wait(gateway.tasks, timeout=config.redis.timeout_s)
            await client.aclose()
            if gateway.queue is not None:
                gateway.queue.connection.close()

    middleware = [Middleware(_Observed, metrics=metrics)]
    if config.gateway.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=config.gateway.cors_origins,
            allow_methods=["GET", "POST", "DELETE"], allow_headers=["*"],
            expose_headers=["x-request-id", "retry-after", "retry-after-ms", "location"]))
    return Starlette(
        routes=[*routes_openai.routes, *routes_anthropic.routes, *jobs_view.routes,
                *routes_files.routes, *routes_batches.routes, *_ops_routes()],
        middleware=middleware, lifespan=lifespan,
        exception_handlers={SwitchyardError: _answer, HTTPException: _answer,
                            Exception: _answer})


async def _answer(request: Request, exc: Exception) -> Response:
    """Every error, in the shape of the API the caller used."""
    if isinstance(exc, HTTPException):
        error = GatewayError(exc.status_code, "invalid_request_error", str(exc.detail))
    else:
        error = http_error(exc, gateway_of(request).config.gateway.max_retry_after_s)
    if error.status >= 500 and error.code == "internal_error":
        log.error("unexpected %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
    if request.url.path.startswith(routes_anthropic.ROUTE):
        return JSONResponse(anthropic_body(error), status_code=anthropic_status(error),
                            headers=error.headers)
    return JSONResponse(openai_body(error), status_code=error.status, headers=error.headers)


def _ops_routes() -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        client = gateway_of(request).client
        try:
            await client.redis.ping()
            live = await client.live_pools()
        except (OSError, SwitchyardError, Exception) as exc:
            return JSONResponse({"status": "unavailable", "redis": type(exc).__name__},
                                status_code=503)
        status = 200 if live else 503
        return JSONResponse({"status": "ready" if live else "no live workers",
                             "live_pools": live}, status_code=status)

    async def metrics(request: Request) -> Response:
        registry = gateway_of(request).metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"])]


_ID_PATHS = [(re.compile(rf"^/v1/{family}/[^/]+"), f"/v1/{family}/{{id}}")
             for family in ("jobs", "files", "batches")]
_KNOWN = {"/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/models",
          "/v1/files", "/v1/batches", "/healthz", "/readyz", "/metrics"}


def _route(path: str) -> str:
    if path in _KNOWN:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    for pattern, label in _ID_PATHS:
        if pattern.match(path):
            return pattern.sub(label, path)
    return "other"


class _Observed:
    """Counts and times every request, and logs one line for it: route, status, tenant,
    model, job id and milliseconds (never a body, a header's value or a key)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._counted: dict[tuple[str, str, str], Any] = {}  # labelled children, reused
        self._timed: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, job = time.monotonic(), 500, ""

        async def sending(message: Message) -> None:
            nonlocal status, job
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name == b"x-request-id":
                        job = value.decode()
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, status, job, time.monotonic() - started)

    def _record(self, scope: Scope, status: int, job: str, elapsed: float) -> None:
        state: dict[str, Any] = scope.get("state") or {}
        route, tenant = _route(scope["path"]), str(state.get("tenant", "-"))
        labels = (route, str(status), tenant)
        counter = self._counted.get(labels)
        if counter is None:
            counter = self._counted[labels] = self.metrics.requests.labels(*labels)
        counter.inc()
        timer = self._timed.get(route)
        if timer is None:
            timer = self._timed[route] = self.metrics.latency.labels(route)
        timer.observe(elapsed)
        log.info("%s %s %d tenant=%s model=%s job=%s %.1fms", scope["method"], route, status,
                 tenant, state.get("model", "-"), job or "-", elapsed * 1000,
                 extra={"job_id": job or None, "tenant": tenant, "outcome": status,
                        "timings": {"total_ms": round(elapsed * 1000, 1)},
                        "traceparent": state.get("traceparent")})
