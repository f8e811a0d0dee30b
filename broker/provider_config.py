"""The ``[providers.<name>]`` section and a bridge pool's ``targets`` and ``bridge``
settings (re-exported by ``broker/config.py``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from switchyard.broker.confbase import Seconds, Strict

__all__ = ["BridgeConfig", "ProviderConfig", "TargetConfig"]


class ProviderConfig(Strict):
    """An external API. The key is read from the environment variable ``api_key_env``
    when a bridge starts; it is never logged, nor put in a result or an error."""

    kind: Literal["openai", "anthropic", "openai-compatible"]
    base_url: str
    api_key_env: str | None = None
    connect_timeout_s: Seconds = 5.0
    max_connections: Annotated[int, Field(ge=1)] = 200
    rpm: Annotated[int, Field(ge=0)] = 0
    """Requests per minute across every bridge (0: no limit of ours) ..."""
    tpm: Annotated[int, Field(ge=0)] = 0
    """... and tokens per minute (prompt estimate + max_tokens)."""
    burst_s: Seconds = 10.0
    """The buckets hold this many seconds' worth."""
    local_fake: bool = False
    """`switchyard up` starts `switchyard fake-provider` on this base_url's port."""


class TargetConfig(Strict):
    """One step of a bridge pool's route: a provider and its name for the model."""

    provider: str
    model: str
    weight: Annotated[float, Field(ge=0)] = 0.0
    """0: tried in its place in the route. Targets with a weight above 0 share the first
    attempts of all jobs in proportion to their weights; failover then goes down the
    route in order."""
    price_in: Annotated[float, Field(ge=0)] = 0.0
    """USD per million input tokens."""
    price_out: Annotated[float, Field(ge=0)] = 0.0
    """USD per million output tokens."""
    timeout_s: Seconds = 60.0
    """Longest wait for one attempt (first byte to last)."""
    first_token_timeout_s: Seconds = 10.0
    """Longest wait for response headers (and, streaming, the first token)."""


class BridgeConfig(Strict):
    """How a bridge pool walks its targets."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Attempts per request across all targets."""
    retry_ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Retries allowed per first attempt (the retry budget), so an outage never multiplies
    load by more than this."""
    backoff_s: Annotated[float, Field(ge=0)] = 0.2
    """Base of the full-jitter exponential backoff before retrying the same target."""
    breaker_window_s: Seconds = 30.0
    breaker_min_calls: Annotated[int, Field(ge=1)] = 10
    breaker_failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    breaker_consecutive: Annotated[int, Field(ge=1)] = 5
    breaker_open_s: Seconds = 5.0
    """How long a breaker stays open after its first trip; doubles per trip in a row."""
    breaker_max_open_s: Seconds = 300.0
