"""Keeps child processes running: each one restarted with backoff when it exits, all of
them stopped by PID (SIGTERM, then SIGKILL after a grace period).

`switchyard up` runs one worker per pool under it; `switchyard worker --device all` one
worker per visible GPU. Children get their own sessions, so a Ctrl-C reaches only the
supervisor, which then stops them in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "Supervisor", "stop_process", "stop_signals"]


def stop_signals() -> threading.Event:
    """An event set when SIGTERM or SIGINT reaches this process (instead of dying)."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> int:
    """SIGTERM by PID, wait up to ``grace_s``, then SIGKILL; the exit code."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = field(default=0.0)
    env: dict[str, str] | None = None
    """Variables added to the child's environment (secrets go here, not in ``args``,
    which any local user can read)."""


class Supervisor:
    def __init__(self, *, say: Callable[[str], None] = print, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0) -> None:
        self.children: list[Child] = []
        self._say = say
        self._backoff = backoff_s
        self._max_backoff = max_backoff_s

    def start(self, name: str, args: Sequence[str], log: Path,
              env: dict[str, str] | None = None) -> Child:
        child = Child(name, list(args), log, env=env)
        self._spawn(child)
        self.children.append(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.log.parent.mkdir(parents=True, exist_ok=True)
        with child.log.open("ab") as out:
            child.process = subprocess.Popen(
                child.args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=None if child.env is None else {**os.environ, **child.env})
        child.next_start = 0.0

    def check(self) -> None:
        """Restart children that exited, each after its backoff (doubling per restart)."""
        now = time.monotonic()
        for child in self.children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            if child.next_start == 0.0:
                delay = min(self._backoff * 2.0 ** child.restarts, self._max_backoff)
                self._say(f"switchyard: {child.name} exited ({code}); restarting in "
                          f"{delay:.0f}s (log: {child.log})")
                child.next_start = now + delay
            elif now >= child.next_start:
                child.restarts += 1
                self._spawn(child)

    def run(self, stopping: threading.Event, interval_s: float = 0.2) -> None:
        """Keep the children running until ``stopping`` is set."""
        while not stopping.is_set():
            self.check()
            stopping.wait(interval_s)

    def stop(self, grace_s: float = 60.0) -> None:
        """SIGTERM every child (they drain), wait, SIGKILL what is left."""
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:  # all at once: they drain in parallel
            process.terminate()
        deadline = time.monotonic() + grace_s
        for process in running:
            stop_process(process, max(0.1, deadline - time.monotonic()))
