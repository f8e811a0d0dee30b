"""Switchyard's workers: the worker runtime and its engines.

GPU engines import torch only when built; importing this package does not.
"""

from switchyard.workers.engines import EchoEngine, Engine, EngineOutput, build_engine
from switchyard.workers.errors import EngineUnavailable, UnknownPool, WorkerError
from switchyard.workers.runtime import Worker, WorkerStats
from switchyard.workers.scheduler import PriorityScheduler

__all__ = [
    "EchoEngine",
    "Engine",
    "EngineOutput",
    "EngineUnavailable",
    "PriorityScheduler",
    "UnknownPool",
    "Worker",
    "WorkerError",
    "WorkerStats",
    "build_engine",
]
