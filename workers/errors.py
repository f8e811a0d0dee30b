"""Errors raised by workers.

    SwitchyardError                 (broker.errors)
    └── WorkerError
        ├── EngineUnavailable       an engine cannot be built here (missing model or extra)
        ├── UnknownPool             the worker was asked to serve a pool not configured
        ├── OutOfMemory             an engine ran out of device memory on a batch
        └── DeviceLost              the device is unusable until the process restarts
"""

from __future__ import annotations

import time

from switchyard.broker.errors import SwitchyardError

__all__ = ["DeviceLost", "EngineUnavailable", "OutOfMemory", "UnknownPool", "WorkerError"]


class WorkerError(SwitchyardError):
    """Raised by the worker runtime."""


class EngineUnavailable(WorkerError):
    """An engine cannot be built: its model is missing, or `switchyard[gpu]` is not installed."""


class UnknownPool(WorkerError):
    """The pool is not in the configuration."""


class OutOfMemory(WorkerError):
    """An engine's batch did not fit in device memory (it has freed what it could). The
    worker splits the batch and runs the halves.

    One event may fail several submissions at once (every request in a running batch
    gets the same exception): ``event`` tells them apart, so the worker learns from each
    event once. It carries no traceback or cause, which would keep the failed batch's
    tensors alive."""

    def __init__(self, message: str, event: int = 0) -> None:
        super().__init__(message)
        self.event = event or time.monotonic_ns()


class DeviceLost(WorkerError):
    """A sticky CUDA error (a device-side assert, an illegal memory access, a lost GPU):
    every later call on the device fails until the process restarts. No job is to blame,
    so none spends an attempt: the worker hands back what it holds and exits non-zero,
    and its supervisor restarts it."""
