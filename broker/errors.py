"""Errors raised by the broker layer, and the root of every Switchyard exception.

    SwitchyardError                 root: catch this to catch anything Switchyard raises
    ├── ConfigError                 a configuration file or variable is invalid
    └── BrokerError                 anything at the Redis boundary
        ├── RedisSettingsError      a Redis URL that cannot be used
        ├── BrokerUnavailable       Redis did not answer
        │   └── RedisOutOfMemory    Redis refused a write: it is at ``maxmemory``
        ├── UnsafeEvictionPolicy    Redis may evict keys (maxmemory-policy not noeviction)
        ├── DurabilityUnavailable   a durable enqueue the server cannot confirm on disk
        ├── JobIdError              a job id that does not name a pool and partition
        └── EntryDecodeError        a stream entry that does not decode or validate

Other packages hang their own trees under ``SwitchyardError`` (``switchyard.dispatcher.errors``,
``switchyard.workers.errors``).
"""

from __future__ import annotations

from redis.exceptions import (
    OutOfMemoryError,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
)

__all__ = [
    "REDIS_FAILURES",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "DurabilityUnavailable",
    "EntryDecodeError",
    "JobIdError",
    "RedisOutOfMemory",
    "RedisSettingsError",
    "SwitchyardError",
    "UnsafeEvictionPolicy",
    "redis_failure",
]


class SwitchyardError(Exception):
    """Root of every exception Switchyard raises on purpose."""


class ConfigError(SwitchyardError):
    """A configuration file, option or environment variable is invalid."""


class BrokerError(SwitchyardError):
    """A failure at the Redis boundary."""


class RedisSettingsError(BrokerError):
    """A Redis URL that Switchyard cannot use."""


class BrokerUnavailable(BrokerError):
    """Redis could not be reached, or dropped the connection."""


class RedisOutOfMemory(BrokerUnavailable):
    """Redis is at its ``maxmemory`` and refused to admit the job (nothing was written);
    work already admitted still finishes. Retry later, or give Redis more memory."""


REDIS_FAILURES: tuple[type[Exception], ...] = (
    RedisError, OSError, SlotNotCoveredError, RedisClusterUnreachableError)
"""What a Redis client raises when the server (or a cluster's node) cannot answer now:
every role retries, or reports :class:`BrokerUnavailable`. A Redis Cluster mid-failover
adds two that are not ``RedisError``s: a slot no master holds yet, and no node reachable."""


def redis_failure(where: str, exc: BaseException) -> BrokerUnavailable:
    """A Redis client error as the typed error callers see (``where``: the server, shown
    without its password)."""
    # redis-py raises OutOfMemoryError for a command refused outright (the "OOM" code
    # stripped from its text); a script that failed inside keeps it in a ResponseError.
    if isinstance(exc, OutOfMemoryError) or "used memory > 'maxmemory'" in str(exc):
        return RedisOutOfMemory(f"Redis at {where} is out of memory (maxmemory): {exc}")
    return BrokerUnavailable(f"Redis at {where}: {exc}")


class UnsafeEvictionPolicy(BrokerError):
    """Redis runs a ``maxmemory-policy`` other than ``noeviction``: it could evict job
    records, so roles refuse to start on it."""


class DurabilityUnavailable(BrokerError):
    """A ``durable`` enqueue that the server cannot confirm reached its disk: no AOF, or
    Redis older than 7.2 (no WAITAOF) without ``appendfsync always``; nothing was
    enqueued. Or WAITAOF did not confirm the fsync in time: then ``job_id`` names the job,
    which may have been admitted (retry with the same idempotency key to find out)."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobIdError(BrokerError):
    """A job id that does not carry a pool and a partition."""


class EntryDecodeError(BrokerError):
    """A stream entry whose payload does not decode or validate."""
