"""The `switchyard` command, assembled from the sub-commands each package defines."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from switchyard.broker.commands import run_command
from switchyard.broker.locate import DEFAULT_STATE_DIR, STATE_DIR_ENV
from switchyard.dispatcher import cli as dispatcher_cli
from switchyard.dispatcher.batches import cli as batches_cli
from switchyard.dispatcher.gateway import cli as gateway_cli
from switchyard.ops import (
    acl,
    alerts,
    dashboards,
    dlq,
    exporter,
    fake_engine,
    fake_provider,
    plan,
    top,
)
from switchyard.ops import status as status_cli
from switchyard.ops.bench import cli as bench_cli
from switchyard.ops.stack import UpOptions, up
from switchyard.workers import cli as workers_cli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchyard", description="Switchyard: a message-queue driven inference platform."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("up", help="start a private Redis and one worker per pool")
    p.add_argument("--config", help="TOML config file (default: builtin minilm + echo)")
    p.add_argument("--state-dir", type=Path,
                   default=Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR),
                   help=f"Redis data (AOF), its URL and worker logs (default: ${STATE_DIR_ENV}, "
                        f"else ./{DEFAULT_STATE_DIR})")
    p.add_argument("--durable", action="store_true",
                   help="Redis fsyncs every write (appendfsync always) instead of once a second")
    p.add_argument("--cluster", action="store_true",
                   help="a local Redis Cluster (3 masters, a replica each) instead of one server")
    p.set_defaults(handler=lambda ns: up(UpOptions(ns.config, ns.state_dir, ns.durable,
                                                   ns.cluster)))
    workers_cli.add_parser(sub)
    dispatcher_cli.add_parser(sub)
    gateway_cli.add_parser(sub)
    batches_cli.add_parser(sub)
    status_cli.add_parser(sub)
    exporter.add_parser(sub)
    alerts.add_parser(sub)
    dashboards.add_parser(sub)
    top.add_parser(sub)
    plan.add_parser(sub)
    dlq.add_parser(sub)
    acl.add_parser(sub)
    bench_cli.add_parser(sub)
    fake_provider.add_parser(sub)
    fake_engine.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
