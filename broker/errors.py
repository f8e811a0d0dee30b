"""Errors raised by the broker layer, and the root of every Switchyard exception.

    SwitchyardError                 root: catch this to catch anything Switchyard raises
    ├── ConfigError                 a configuration file or variable is invalid
    └── BrokerError                 anything at the Redis boundary
        ├── RedisSettingsError      a Redis URL that cannot be used
        ├── BrokerUnavailable       Redis did not answer
        ├── JobIdError              a job id that does not name a pool and partition
        └── EntryDecodeError        a stream entry that does not decode or validate

Other packages hang their own trees under ``SwitchyardError`` (``dispatcher.errors``,
``workers.errors``).
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "EntryDecodeError",
    "JobIdError",
    "RedisSettingsError",
    "SwitchyardError",
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


class JobIdError(BrokerError):
    """A job id that does not carry a pool and a partition."""


class EntryDecodeError(BrokerError):
    """A stream entry whose payload does not decode or validate."""
