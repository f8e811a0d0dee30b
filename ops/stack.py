"""`switchyard up`: a private Redis (AOF on) plus one worker per configured pool.

Children run in their own sessions, so a Ctrl-C reaches only this supervisor, which then
stops them in order: workers first (they drain), Redis last. A worker that dies is
restarted with backoff.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from broker.config import SwitchyardConfig, load_config
from broker.errors import ConfigError
from ops.processes import worker_command
from ops.redis_server import RedisServer

__all__ = ["UpOptions", "up"]

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class UpOptions:
    config: str | None = None
    state_dir: Path = Path(".switchyard")


@dataclass
class _Child:
    pool: str
    process: subprocess.Popen[bytes]
    restarts: int = 0
    next_start: float = 0.0
    log: Path = field(default_factory=Path)


def up(options: UpOptions) -> int:
    config = load_config(options.config)
    server = _redis_for(config, options.state_dir)
    url = server.url if server else os.environ.get("REDIS_URL", config.redis.url)
    children: list[_Child] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if server is not None:
            server.start()
        for pool in config.pools:
            children.append(_spawn(pool, url, options))
        _banner(config, url, options.state_dir)
        while not stopping:
            _supervise(children, url, options)
            time.sleep(0.2)
        print("switchyard: stopping workers (they finish what they hold) ...", flush=True)
    finally:
        _stop_workers(children)
        if server is not None:
            server.stop()
    print("switchyard: stopped.", flush=True)
    return 0


def _redis_for(config: SwitchyardConfig, state_dir: Path) -> RedisServer | None:
    if os.environ.get("REDIS_URL"):
        return None
    parts = urlsplit(config.redis.url)
    if parts.scheme != "redis" or parts.hostname not in _LOCAL_HOSTS:
        raise ConfigError(
            f"switchyard up starts its own Redis on this host; [redis] url "
            f"{config.redis.url!r} is not local (set REDIS_URL to use an existing server)"
        )
    return RedisServer(state_dir / "redis", parts.port or 6379, aof=True)


def _spawn(pool: str, url: str, options: UpOptions, restarts: int = 0) -> _Child:
    args = worker_command(pool, url, options.config)
    log = options.state_dir / "logs" / f"worker-{pool}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return _Child(pool, process, restarts, log=log)


def _supervise(children: list[_Child], url: str, options: UpOptions) -> None:
    now = time.monotonic()
    for i, child in enumerate(children):
        code = child.process.poll()
        if code is None:
            continue
        if child.next_start == 0.0:
            delay = min(2.0 ** child.restarts, 30.0)
            print(f"switchyard: worker for pool {child.pool} exited ({code}); restarting in "
                  f"{delay:.0f}s (log: {child.log})", flush=True)
            child.next_start = now + delay
        elif now >= child.next_start:
            children[i] = _spawn(child.pool, url, options, child.restarts + 1)


def _stop_workers(children: list[_Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + 60
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _banner(config: SwitchyardConfig, url: str, state_dir: Path) -> None:
    model = next(iter(config.models), "minilm")
    flag = "" if url == config.redis.url else f" --redis-url {url}"
    print(f"switchyard: up. Redis at {url}; pools: {', '.join(config.pools)}; "
          f"state and logs in {state_dir}/", flush=True)
    print(f"  submit:  switchyard submit embed --model {model}{flag} \"hello\"", flush=True)
    print(f"  status:  switchyard status{flag}", flush=True)
    print("  Ctrl-C stops everything.", flush=True)
