"""The `switchyard` command, assembled from the sub-commands each package defines."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from redis.exceptions import RedisError

from broker.errors import SwitchyardError
from dispatcher import cli as dispatcher_cli
from ops import dlq, fake_provider
from ops import status as status_cli
from ops.bench import cli as bench_cli
from ops.stack import UpOptions, up
from workers import cli as workers_cli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchyard", description="Switchyard: a message-queue driven inference platform."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("up", help="start a private Redis and one worker per pool")
    p.add_argument("--config", help="TOML config file (default: builtin minilm + echo)")
    p.add_argument("--state-dir", default=".switchyard", type=Path,
                   help="Redis data (AOF) and worker logs (default: ./.switchyard)")
    p.add_argument("--durable", action="store_true",
                   help="Redis fsyncs every write (appendfsync always) instead of once a second")
    p.set_defaults(handler=lambda ns: up(UpOptions(ns.config, ns.state_dir, ns.durable)))
    workers_cli.add_parser(sub)
    dispatcher_cli.add_parser(sub)
    status_cli.add_parser(sub)
    dlq.add_parser(sub)
    bench_cli.add_parser(sub)
    fake_provider.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = ns.handler
    try:
        return handler(ns)
    except SwitchyardError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except (RedisError, ConnectionError) as exc:
        _fail(f"Redis is not reachable ({exc}); is `switchyard up` running, or --redis-url set?")
    except KeyboardInterrupt:
        return 130
    return 1


def _fail(message: str) -> None:
    logging.shutdown()
    print(f"switchyard: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
