"""What one gateway process holds: its config, its one async client, the authenticator,
its metrics, and the background tasks it started (cancels of abandoned jobs)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from switchyard.broker.config import SwitchyardConfig
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
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

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
