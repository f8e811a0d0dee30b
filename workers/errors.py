"""Errors raised by workers.

    SwitchyardError                 (broker.errors)
    └── WorkerError
        ├── EngineUnavailable       an engine cannot be built here (missing model or extra)
        ├── UnknownPool             the worker was asked to serve a pool not configured
        └── OutOfMemory             an engine ran out of device memory on a batch
"""

from __future__ import annotations

from switchyard.broker.errors import SwitchyardError

__all__ = ["EngineUnavailable", "OutOfMemory", "UnknownPool", "WorkerError"]


class WorkerError(SwitchyardError):
    """Raised by the worker runtime."""


class EngineUnavailable(WorkerError):
    """An engine cannot be built: its model is missing, or `switchyard[gpu]` is not installed."""


class UnknownPool(WorkerError):
    """The pool is not in the configuration."""


class OutOfMemory(WorkerError):
    """An engine's batch did not fit in device memory (it has freed what it could). The
    worker splits the batch and runs the halves."""
