"""Running a parsed command line: what every Switchyard command shares.

``switchyard`` (ops) and ``python -m switchyard.workers`` (the worker and watchdog processes
that supervisors start) both end here, so an error reads the same from either: one line,
``switchyard: error: ...``, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from switchyard.broker.errors import REDIS_FAILURES, SwitchyardError

__all__ = ["run_command"]


_UNREACHABLE: tuple[type[Exception], ...] = (*REDIS_FAILURES, ConnectionError)


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and call the chosen sub-command's ``handler``; its exit code."""
    ns = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = ns.handler
    try:
        return handler(ns)
    except SwitchyardError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except _UNREACHABLE as exc:
        _fail(f"Redis is not reachable ({exc}); is `switchyard up` running, or --redis-url set?")
    except KeyboardInterrupt:
        return 130
    return 1


def _fail(message: str) -> None:
    logging.shutdown()
    print(f"switchyard: error: {message}", file=sys.stderr)
