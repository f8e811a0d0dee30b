"""``python -m switchyard.workers worker|watchdog``: the processes supervisors start."""

from switchyard.broker.commands import run_command
from switchyard.workers.cli import build_parser

raise SystemExit(run_command(build_parser()))
