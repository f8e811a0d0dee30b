"""``[gateway]``: the HTTP gateway's settings (see ``switchyard.dispatcher.gateway``).

Its listening address, how many processes serve it, how callers authenticate, which
browser origins may call it, and the timings of its streams. It lives in ``broker`` with
the rest of the configuration; nothing here imports a web framework.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from switchyard.broker.confbase import Seconds, Strict

__all__ = ["GatewayConfig"]


class GatewayConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8080
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    """Gateway processes (uvicorn workers) sharing the port."""
    auth: Literal["keys", "none"] = "keys"
    """``keys``: every call needs an API key (``[tenants.NAME] api_keys_sha256``, or a
    run-time key from ``switchyard keys create``); with none configured the gateway will
    not start. ``none``: no authentication at all, every caller is tenant ``default``
    (for a laptop; never on a network)."""
    key_cache_s: Seconds = 5.0
    """How long a looked-up run-time key (or its absence) is trusted: a revoked key stops
    working within this long."""
    cors_origins: list[str] = []
    """Browser origins allowed to call the gateway (``["*"]``: any); none by default."""
    keepalive_s: Seconds = 10.0
    """A waiting stream sends an SSE comment this often, so proxies keep it open."""
    shutdown_grace_s: Seconds = 10.0
    """On SIGTERM: how long open requests and streams get to finish."""
    max_retry_after_s: Annotated[float, Field(gt=0, le=120)] = 120.0
    """The longest ``Retry-After`` sent: the openai SDK (3.x) does not retry on one over
    120 s (``MAX_RETRY_AFTER_DELAY``); the anthropic SDK waits whatever it is told. A
    longer wait is sent as this cap with ``x-should-retry: false``: the caller learns
    when to come back, and its SDK does not sleep through it."""
