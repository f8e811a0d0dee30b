"""`switchyard up`: a private Redis (AOF on) plus one worker per configured pool.

Children run in their own sessions, so a Ctrl-C reaches only this supervisor, which then
stops them in order: workers first (they drain), Redis last. A worker that dies is
restarted with backoff.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import ConfigError
from switchyard.ops import fake_provider
from switchyard.ops.redis_server import RedisServer
from switchyard.workers.cli import watchdog_command, worker_command
from switchyard.workers.supervisor import Supervisor, stop_signals

__all__ = ["UpOptions", "up"]

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class UpOptions:
    config: str | None = None
    state_dir: Path = Path(".switchyard")
    durable: bool = False
    """Run Redis with ``appendfsync always``: no admitted job is lost on a crash, and
    ``durable`` enqueues work on Redis before 7.2 too (each write waits for the disk)."""


def up(options: UpOptions) -> int:
    config = load_config(options.config)
    server = _redis_for(config, options.state_dir, options.durable)
    url = server.url if server else os.environ.get("REDIS_URL", config.redis.url)
    supervisor = Supervisor(say=lambda line: print(line, flush=True))
    stopping = stop_signals()
    try:
        if server is not None:
            server.start()
        for name, provider in config.providers.items():
            if provider.local_fake:  # stands in for an external API: see README
                port = urlsplit(provider.base_url).port or 80
                supervisor.start(f"fake provider {name}", fake_provider.command(port),
                                 options.state_dir / "logs" / f"fake-provider-{name}.log")
        for pool in config.pools:
            supervisor.start(f"worker for pool {pool}",
                             worker_command(pool, config=options.config, redis_url=url),
                             options.state_dir / "logs" / f"worker-{pool}.log")
        supervisor.start("watchdog", watchdog_command(config=options.config, redis_url=url),
                         options.state_dir / "logs" / "watchdog.log")
        _banner(config, url, options.state_dir)
        supervisor.run(stopping)
        print("switchyard: stopping workers (they finish what they hold) ...", flush=True)
    finally:
        supervisor.stop()
        if server is not None:
            server.stop()
    print("switchyard: stopped.", flush=True)
    return 0


def _redis_for(config: SwitchyardConfig, state_dir: Path, durable: bool) -> RedisServer | None:
    if os.environ.get("REDIS_URL"):
        return None
    parts = urlsplit(config.redis.url)
    if parts.scheme != "redis" or parts.hostname not in _LOCAL_HOSTS:
        raise ConfigError(
            f"switchyard up starts its own Redis on this host; [redis] url "
            f"{config.redis.url!r} is not local (set REDIS_URL to use an existing server)"
        )
    return RedisServer(state_dir / "redis", parts.port or 6379, aof=True,
                       appendfsync="always" if durable else "everysec")


def _banner(config: SwitchyardConfig, url: str, state_dir: Path) -> None:
    model = next(iter(config.models), "minilm")
    flag = "" if url == config.redis.url else f" --redis-url {url}"
    print(f"switchyard: up. Redis at {url}; pools: {', '.join(config.pools)}; "
          f"state and logs in {state_dir}/", flush=True)
    print(f"  submit:  switchyard submit embed --model {model}{flag} \"hello\"", flush=True)
    print(f"  status:  switchyard status{flag}", flush=True)
    print("  Ctrl-C stops everything.", flush=True)
