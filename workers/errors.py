"""Errors raised by workers.

    SwitchyardError                 (broker.errors)
    └── WorkerError
        ├── EngineUnavailable       an engine cannot be built here (missing model or extra)
        └── UnknownPool             the worker was asked to serve a pool not configured
"""

from __future__ import annotations

from broker.errors import SwitchyardError

__all__ = ["EngineUnavailable", "UnknownPool", "WorkerError"]


class WorkerError(SwitchyardError):
    """Raised by the worker runtime."""


class EngineUnavailable(WorkerError):
    """An engine cannot be built: its model is missing, or `switchyard[gpu]` is not installed."""


class UnknownPool(WorkerError):
    """The pool is not in the configuration."""
