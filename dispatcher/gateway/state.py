"""What one gateway process holds: its config, its one async client, the authenticator,
its metrics, the background tasks it started (cancels of abandoned jobs), and for the
batch API the file store, the batch records and rq's batch queue."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from rq import Queue
from starlette.requests import Request

from switchyard.broker.config import DEFAULT_TENANT, SwitchyardConfig
from switchyard.dispatcher.batches.files import FileStore
from switchyard.dispatcher.batches.records import BatchRecords
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.gateway.auth import Authenticator
from switchyard.dispatcher.gateway.metrics import GatewayMetrics

__all__ = ["Gateway", "gateway_of", "sse"]


@dataclass
class Gateway:
    config: SwitchyardConfig
    client: AsyncClient
    auth: Authenticator
    metrics: GatewayMetrics
    files: FileStore
    batches: BatchRecords
    queue: Queue | None
    """None: no batch queue (a cluster broker, and no ``[batch] redis_url``)."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @staticmethod
    def owner(tenant: str | None) -> str:
        """Whose files and batches a caller sees: its tenant's (``default`` under
        ``auth = "none"``, where everyone is)."""
        return tenant or DEFAULT_TENANT

    @property
    def body_limit(self) -> int:
        """The most bytes a body may have: the request's own limit, plus room for the
        JSON around it."""
        return int(self.config.limits.max_request_bytes) + 64 * 1024

    async def tenant(self, request: Request) -> str | None:
        tenant, run_time = await self.auth.tenant(request.headers)
        if run_time and tenant is not None and tenant not in self.config.tenants:
            self.client.own_bucket(tenant)  # [tenants.default]'s quotas, as its own
        request.state.tenant = tenant or "default"
        return tenant


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event (``data`` as JSON unless already text)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()
