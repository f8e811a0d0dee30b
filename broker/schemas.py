"""Versioned wire schemas (pydantic v2, serialized as JSON; never pickle).

A stream entry has three fields: ``id`` (job id), ``r`` (the caller's reply stream) and
``d`` (a :class:`JobEnvelope` as JSON). ``id`` and ``r`` sit outside the payload so a job
whose payload is malformed can still be failed where its caller sees it.
A finished job is a :class:`JobOutcome`, kept on the job record and sent on the reply stream.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.broker.errors import EntryDecodeError

__all__ = [
    "MAX_STOP",
    "PRIORITIES",
    "SCHEMA_VERSION",
    "SEED_RANGE",
    "TERMINAL_STATES",
    "TRACEPARENT",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "EmbedRequest",
    "EmbedResult",
    "ErrorInfo",
    "JobEnvelope",
    "JobOutcome",
    "JobRequest",
    "JobResult",
    "JobState",
    "Priority",
    "ServedBy",
    "Usage",
    "decode_envelope",
    "now_ms",
]

SCHEMA_VERSION = 1
TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""A W3C trace context ``traceparent``: version, trace id, parent id, flags."""

Priority = Literal["interactive", "standard", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "standard", "batch")
"""Highest priority first."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    __wire_fields__: ClassVar[tuple[str, ...]] = ()
    """The fields in the schema's order (which the JSON follows), for :meth:`built`."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.__wire_fields__ = tuple(cls.__pydantic_fields__)

    @classmethod
    def built(cls, **fields: Any) -> Self:
        """A model from values checked already, naming every field: as ``model_construct``
        (no validation), without its per-field defaults pass, for the per-job hot paths.
        The result is the same model (``tests/broker/test_schemas.py`` pins it). Fields
        named in the schema's order are taken as they come; others are put in order."""
        if tuple(fields) != cls.__wire_fields__:
            try:
                ordered = {name: fields[name] for name in cls.__wire_fields__}
            except KeyError:
                ordered = {}
            if len(ordered) != len(fields):
                raise TypeError(f"{cls.__name__}.built needs all of "
                                f"{', '.join(cls.__wire_fields__)}")
            fields = ordered
        model = cls.__new__(cls)
        _set(model, "__dict__", fields)
        _set(model, "__pydantic_fields_set__", set(fields))
        _set(model, "__pydantic_extra__", None)
        _set(model, "__pydantic_private__", None)
        return model


_set = object.__setattr__


class EmbedRequest(_Wire):
    kind: Literal["embed"] = "embed"
    input: Annotated[list[str], Field(min_length=1)]


MAX_STOP = 64
"""Stop strings a chat request may carry at most on the wire (the enqueue API holds them
to ``[limits] max_stop``, 4 by default, as OpenAI does)."""
SEED_RANGE = (-(2**63), 2**63 - 1)
"""A seed is a signed 64-bit integer (OpenAI's range; torch takes every one)."""


class ChatMessage(_Wire):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Wire):
    """Chat generation. ``temperature`` 0 is greedy decoding; ``seed`` makes sampling
    repeatable; ``stream`` sends text deltas to the reply stream as they are produced."""

    kind: Literal["chat"] = "chat"
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] = 256
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    stop: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)] = []
    seed: Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])] | None = None
    stream: bool = False


JobRequest = Annotated[EmbedRequest | ChatRequest, Field(discriminator="kind")]


class JobEnvelope(_Wire):
    """What a worker receives: one job, as the dispatcher admitted it."""

    v: Literal[1] = 1
    id: str
    model: str
    priority: Priority
    created_ms: int
    deadline_ms: int | None = None
    tenant: str | None = None
    attempts: int = 0
    request: JobRequest
    trace: Annotated[str, Field(pattern=TRACEPARENT)] | None = None
    """The W3C ``traceparent`` of the request that made the job (the gateway's), so its
    log lines can be joined with the worker's."""


class Usage(_Wire):
    input_tokens: int = 0
    output_tokens: int = 0


class ServedBy(_Wire):
    worker: str
    pool: str
    engine: str
    device: str
    provider: str | None = None
    """For a bridge: the provider that answered, and its model name."""
    model: str | None = None


class EmbedResult(_Wire):
    """Vectors in input order. The ``echo`` engine returns empty vectors and its input."""

    kind: Literal["embed"] = "embed"
    vectors: list[list[float]]
    dimensions: int
    usage: Usage = Usage()
    echo: list[str] | None = None
    served_by: ServedBy | None = None
    cost_usd: float | None = None


class ChatResult(_Wire):
    """Generated text. ``finish_reason``: 'stop' (end of sequence or a stop string) or
    'length' (``max_tokens`` reached); ``ttft_ms``: enqueue to first token."""

    kind: Literal["chat"] = "chat"
    text: str
    finish_reason: Literal["stop", "length"]
    usage: Usage = Usage()
    ttft_ms: float | None = None
    served_by: ServedBy | None = None
    cost_usd: float | None = None
    """What the provider charged, from the route's price table (bridges only)."""


JobResult = Annotated[EmbedResult | ChatResult, Field(discriminator="kind")]


class ErrorInfo(_Wire):
    code: str
    message: str


class JobOutcome(_Wire):
    """How a job ended: a result when it succeeded, an error otherwise."""

    v: Literal[1] = 1
    id: str
    state: JobState
    result: JobResult | None = None
    error: ErrorInfo | None = None
    finished_ms: int


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of every timestamp on the wire."""
    return time.time_ns() // 1_000_000


def decode_envelope(raw: str) -> JobEnvelope:
    """Parse a stream entry payload, or raise :class:`EntryDecodeError` saying why."""
    try:
        return JobEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        raise EntryDecodeError(f"invalid job payload at {where}: {first['msg']}") from exc
