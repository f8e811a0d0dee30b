"""How every Switchyard process logs: text lines (the default) or JSON lines.

The format comes from ``--log-format`` (each role's CLI sets ``SWITCHYARD_LOG_FORMAT``, so
the processes a role starts log alike) or from that variable. A JSON line holds ``ts``
(UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``msg``, ``exc`` for an
exception, and the fields of :data:`FIELDS` a call passes in ``extra`` (a job's id,
tenant, pool, priority, outcome, timings, trace parent), so lines can be joined by them.
Messages never carry secrets (URLs are shown redacted, keys never).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Literal, get_args

from switchyard.broker.errors import ConfigError

__all__ = ["FIELDS", "LOG_FORMAT_ENV", "JsonFormatter", "LogFormat", "add_argument", "configure",
           "formatter", "log_format"]

LOG_FORMAT_ENV = "SWITCHYARD_LOG_FORMAT"
LogFormat = Literal["text", "json"]
TEXT = "%(asctime)s %(name)s %(message)s"
FIELDS = ("job_id", "tenant", "pool", "priority", "outcome", "timings", "traceparent",
          "consumer", "batch_id")
"""``extra`` keys a JSON line carries when a call gives them."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
            "logger": record.name, "msg": record.getMessage()}
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def log_format(value: str | None = None) -> LogFormat:
    """``value``, else ``$SWITCHYARD_LOG_FORMAT``, else text; anything else is refused."""
    chosen = value or os.environ.get(LOG_FORMAT_ENV) or "text"
    if chosen not in get_args(LogFormat):
        raise ConfigError(f"log format must be text or json, not {chosen!r} "
                          f"(--log-format or {LOG_FORMAT_ENV})")
    return chosen  # type: ignore[return-value]


def formatter(value: str | None = None) -> logging.Formatter:
    """A formatter for the chosen format (see :func:`log_format`)."""
    return JsonFormatter() if log_format(value) == "json" else logging.Formatter(TEXT)


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` on a role's command line (it sets ``SWITCHYARD_LOG_FORMAT``)."""
    parser.add_argument("--log-format", choices=get_args(LogFormat),
                        help=f"text (default) or json lines (default: ${LOG_FORMAT_ENV})")


def configure(value: str | None = None, level: int = logging.INFO) -> LogFormat:
    """Log to stderr in the chosen format (see :func:`log_format`), replacing the root
    logger's handlers; the format is exported for child processes. Returns it."""
    chosen = log_format(value)
    os.environ[LOG_FORMAT_ENV] = chosen
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(chosen))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return chosen
