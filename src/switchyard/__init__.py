"""Switchyard: a message-queue driven inference platform.

    from switchyard import Client
    with Client() as client:
        vectors = client.embed("minilm", "hello").result().vectors

This package re-exports the enqueue API, the one most applications need. Everything else
lives in its own package:

- ``switchyard.broker``: Redis streams, keys, wire schemas, Lua scripts, configuration;
- ``switchyard.dispatcher``: admission control, routing, the enqueue API;
- ``switchyard.workers``: the worker runtime, engines, provider bridge, watchdog;
- ``switchyard.ops``: the ``switchyard`` CLI, local stack, status, benchmarks.

The names below are imported when first used, so ``import switchyard.workers`` in a worker
process loads no dispatcher code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchyard.broker import (
        BrokerUnavailable,
        ChatResult,
        DurabilityUnavailable,
        EmbedResult,
        SwitchyardConfig,
        SwitchyardError,
        load_config,
    )
    from switchyard.dispatcher import (
        AdmissionRejected,
        AsyncClient,
        AsyncJob,
        Client,
        ClientError,
        InvalidRequest,
        Job,
        JobCancelled,
        JobError,
        JobExpired,
        JobFailed,
        JobNotFound,
        ResultTimeout,
        UnknownModel,
    )

__all__ = [
    "AdmissionRejected",
    "AsyncClient",
    "AsyncJob",
    "BrokerUnavailable",
    "ChatResult",
    "Client",
    "ClientError",
    "DurabilityUnavailable",
    "EmbedResult",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobError",
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "ResultTimeout",
    "SwitchyardConfig",
    "SwitchyardError",
    "UnknownModel",
    "load_config",
]

def __getattr__(name: str) -> object:
    if name in __all__:  # each name is in its own package's __all__
        for home in ("switchyard.dispatcher", "switchyard.broker"):
            module = importlib.import_module(home)
            if name in module.__all__:
                return getattr(module, name)
    raise AttributeError(f"module 'switchyard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
