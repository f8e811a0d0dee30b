"""``[pools.NAME.served]``: a pool whose worker fronts a local serving engine (vLLM,
SGLang, TGI) over its OpenAI-compatible API (``engine = "served"``, see
``switchyard.workers.engines.served``).

The queue stays in Redis: the worker sends the engine only as much as it has room for,
read from the engine's own Prometheus metrics and the worker's count of what it sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from switchyard.broker.confbase import Seconds, Strict

__all__ = ["ServedConfig"]


class ServedConfig(Strict):
    url: str = "http://127.0.0.1:8000"
    """The engine's base URL (its API under ``/v1``, its metrics at ``metrics_path``)."""
    model: str = ""
    """The engine's name for the model (``--served-model-name``); empty: the pool's
    ``model``."""
    metrics: Literal["auto", "vllm", "sglang", "none"] = "auto"
    """Which metric names to read (``auto``: whichever the engine exports). ``none``: no
    metrics (TGI): room is ``max_running`` less what this worker has in flight."""
    metrics_path: str = "/metrics"
    scrape_ms: Annotated[int, Field(ge=20, le=5_000)] = 200
    max_running: Annotated[int, Field(ge=1, le=65_536)] = 256
    """Sequences the engine runs at once (vLLM ``--max-num-seqs``): never more in flight."""
    max_waiting: Annotated[int, Field(ge=0)] = 0
    """Requests the engine may hold queued in its own FIFO: beyond it, nothing is sent
    (the queue, with its priorities and deadlines, stays in Redis)."""
    kv_high: Annotated[float, Field(gt=0, le=1)] = 0.95
    """KV-cache use (0-1) past which nothing more is sent."""
    connect_timeout_s: Seconds = 2.0
    first_token_timeout_s: Seconds = 60.0
    """Longest wait for an answer's first token (the engine is local: a request admitted
    is running)."""
