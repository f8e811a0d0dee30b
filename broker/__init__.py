"""Switchyard's broker: Redis streams, key names, wire schemas, Lua scripts, configuration.

This package imports none of Switchyard's other packages, and never torch.
"""

from switchyard.broker.config import (
    CapsConfig,
    JobsConfig,
    ModelConfig,
    PoolConfig,
    RedisConfig,
    SwitchyardConfig,
    WorkerConfig,
    load_config,
)
from switchyard.broker.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    DurabilityUnavailable,
    EntryDecodeError,
    JobIdError,
    RedisSettingsError,
    SwitchyardError,
)
from switchyard.broker.jobs import JobRecord, read_job
from switchyard.broker.keys import GROUP, JobId, Keys, PartitionKeys, PoolKeys
from switchyard.broker.schemas import (
    PRIORITIES,
    TERMINAL_STATES,
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    ErrorInfo,
    JobEnvelope,
    JobOutcome,
    JobState,
    Priority,
    ServedBy,
    Usage,
    decode_envelope,
    now_ms,
)
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings
from switchyard.broker.streams import StreamEntry, ensure_groups, parse_stream_reply

__all__ = [
    "GROUP",
    "PRIORITIES",
    "TERMINAL_STATES",
    "BrokerError",
    "BrokerUnavailable",
    "CapsConfig",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "ConfigError",
    "DurabilityUnavailable",
    "EmbedRequest",
    "EmbedResult",
    "EntryDecodeError",
    "ErrorInfo",
    "JobEnvelope",
    "JobId",
    "JobIdError",
    "JobOutcome",
    "JobRecord",
    "JobState",
    "JobsConfig",
    "Keys",
    "ModelConfig",
    "PartitionKeys",
    "PoolConfig",
    "PoolKeys",
    "Priority",
    "RedisConfig",
    "RedisSettings",
    "RedisSettingsError",
    "Scripts",
    "ServedBy",
    "StreamEntry",
    "SwitchyardConfig",
    "SwitchyardError",
    "Usage",
    "WorkerConfig",
    "decode_envelope",
    "ensure_groups",
    "load_config",
    "now_ms",
    "parse_stream_reply",
    "read_job",
]
