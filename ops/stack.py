"""`switchyard up`: a private Redis (AOF on), one worker per configured pool, a watchdog,
and the HTTP gateway (with the ``gateway`` extra) with a local API key it prints, and a
batch worker beside it for the Batch API.

Where the configuration names no Redis, `up` runs one on loopback with a generated
password, and writes its URL (mode 0600) to ``<state dir>/redis.url``, which the CLI and
the Python client read when their configuration names no Redis either: so a second
shell's ``switchyard submit`` finds it. The children get the URL in their environment,
never on their command lines. The file is removed when `up` stops.

Children run in their own sessions, so a Ctrl-C reaches only this supervisor, which then
stops them in order: workers first (they drain), Redis last. A worker that dies is
restarted with backoff.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from switchyard.broker.apikeys import ApiKeyStore, key_digest
from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import ConfigError
from switchyard.broker.keys import Keys
from switchyard.broker.locate import STACK_URL_FILE, STATE_DIR_ENV, stack_url_file
from switchyard.broker.settings import RedisSettings, redact_url
from switchyard.ops import fake_provider
from switchyard.ops.redis_cluster import RedisCluster
from switchyard.ops.redis_server import RedisServer, free_port, write_private
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
    cluster: bool = False
    """Start a local Redis Cluster (3 masters with a replica each, on free ports of
    127.0.0.1, no password) instead of one server, and a server of its own for the batch
    queue (rq cannot use a cluster)."""


@dataclass
class _LocalRedis:
    """What ``up`` starts for Redis: its URL, the variables the roles get, the servers."""

    url: str
    env: dict[str, str]
    servers: list[RedisServer | RedisCluster]
    url_file: bool
    """Whether the URL goes to ``<state dir>/redis.url`` (it holds a password, or ports
    nobody named)."""

    def start(self) -> None:
        for server in self.servers:
            server.start()

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def up(options: UpOptions) -> int:
    config = load_config(options.config)
    server = _redis_for(config, options)
    url = server.url if server else os.environ.get("REDIS_URL", config.redis.url)
    # (the gateway and the batch worker share the Batch API's files under the state dir)
    env = {"SWITCHYARD_REDIS__URL": url, **(server.env if server else {}),
           STATE_DIR_ENV: str(options.state_dir.resolve())}
    url_file = options.state_dir / STACK_URL_FILE
    supervisor = Supervisor(say=lambda line: print(line, flush=True))
    stopping = stop_signals()
    try:
        if server is not None:
            server.start()
            if server.url_file:
                write_private(url_file, url + "\n")
        for name, provider in config.providers.items():
            if provider.local_fake:  # stands in for an external API: see README
                port = urlsplit(provider.base_url).port or 80
                supervisor.start(f"fake provider {name}", fake_provider.command(port),
                                 options.state_dir / "logs" / f"fake-provider-{name}.log")
        for pool in config.pools:
            supervisor.start(f"worker for pool {pool}",
                             worker_command(pool, config=options.config),
                             options.state_dir / "logs" / f"worker-{pool}.log", env)
        supervisor.start("watchdog", watchdog_command(config=options.config),
                         options.state_dir / "logs" / "watchdog.log", env)
        key = _start_gateway(supervisor, config, options, url, env)
        _banner(config, url, options.state_dir, url_file if server and server.url_file
                else None)
        if key is not None:
            _gateway_banner(config, key, options.state_dir)
        supervisor.run(stopping)
        print("switchyard: stopping workers (they finish what they hold) ...", flush=True)
    finally:
        supervisor.stop()
        if server is not None:
            server.stop()
            url_file.unlink(missing_ok=True)
    print("switchyard: stopped.", flush=True)
    return 0


def _start_gateway(supervisor: Supervisor, config: SwitchyardConfig, options: UpOptions,
                   url: str, env: dict[str, str]) -> str | None:
    """The gateway, when its extra is installed, with a local key (made once, kept in
    ``<state dir>/gateway.key``, mode 0600): the key, or None without the extra."""
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec(
            "uvicorn") is None:
        print("switchyard: no gateway (pip install 'switchyard[gateway]' for the HTTP API)",
              flush=True)
        return None
    path = options.state_dir / "gateway.key"
    kept = path.read_text().strip() if path.exists() else None
    key = asyncio.run(_local_key(config, url, kept))
    if key != kept:
        write_private(path, key + "\n")
    args = [sys.executable, "-m", "switchyard.ops", "gateway"]
    if options.config:
        args += ["--config", options.config]
    supervisor.start("gateway", args, options.state_dir / "logs" / "gateway.log", env)
    batches = [sys.executable, "-m", "switchyard.ops", "batch-worker"]
    if options.config:
        batches += ["--config", options.config]
    supervisor.start("batch worker", batches, options.state_dir / "logs" / "batch-worker.log",
                     env)
    return key


async def _local_key(config: SwitchyardConfig, url: str, kept: str | None) -> str:
    """The kept key if Redis still knows it, else a new one."""
    redis = RedisSettings.from_url(url).connect()
    store = ApiKeyStore(redis, Keys(config.redis.prefix))
    try:
        if kept and await store.lookup(key_digest(kept)) is not None:
            return kept
        key, _ = await store.create("local")
        return key
    finally:
        await redis.aclose()


def _gateway_banner(config: SwitchyardConfig, key: str, state_dir: Path) -> None:
    host = config.gateway.host
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{config.gateway.port}"
    chat = next((name for name, m in config.models.items() if m.kind == "chat"), "echo-chat")
    print(f"  gateway: {base}/v1, key {key} (tenant local; kept in {state_dir}/gateway.key)",
          flush=True)
    print(f"    python -c 'from openai import OpenAI; c = OpenAI(base_url=\"{base}/v1\", "
          f"api_key=\"{key}\"); print(c.chat.completions.create(model=\"{chat}\", "
          "messages=[{\"role\": \"user\", \"content\": \"hello\"}])"
          ".choices[0].message.content)'", flush=True)


def _redis_for(config: SwitchyardConfig, options: UpOptions) -> _LocalRedis | None:
    if os.environ.get("REDIS_URL"):
        return None
    fsync: Literal["always", "everysec"] = "always" if options.durable else "everysec"
    if options.cluster:
        if "url" in config.redis.model_fields_set:
            raise ConfigError(
                f"switchyard up --cluster starts a cluster on free ports; the configuration "
                f"names [redis] url {redact_url(config.redis.url)!r} (leave it out)")
        cluster = RedisCluster(options.state_dir / "cluster", aof=True, appendfsync=fsync)
        batches = RedisServer(options.state_dir / "batch-redis", free_port(), aof=True,
                              password=secrets.token_urlsafe(24))
        return _LocalRedis(cluster.url, {"SWITCHYARD_BATCH__REDIS_URL": batches.url},
                           [cluster, batches], url_file=True)
    parts = urlsplit(config.redis.url)
    if parts.scheme != "redis" or parts.hostname not in _LOCAL_HOSTS:
        raise ConfigError(
            f"switchyard up starts its own Redis on this host; [redis] url "
            f"{redact_url(config.redis.url)!r} is not local (set REDIS_URL to use an "
            "existing server)")
    # Named in the configuration: as named (its password, if any). Not named: a password
    # of its own, which the state folder's redis.url passes on.
    named = "url" in config.redis.model_fields_set
    password = parts.password if named else secrets.token_urlsafe(24)
    server = RedisServer(options.state_dir / "redis", parts.port or 6379, aof=True,
                         appendfsync=fsync, password=password)
    return _LocalRedis(server.url, {}, [server], url_file=bool(password))


def _banner(config: SwitchyardConfig, url: str, state_dir: Path,
            url_file: Path | None) -> None:
    model = next(iter(config.models), "minilm")
    flag = "" if url_file is not None or url == config.redis.url else (
        f" --redis-url {redact_url(url)}")
    where = f"; its URL and password in {url_file} (mode 0600)" if url_file else ""
    print(f"switchyard: up. Redis at {redact_url(url)}{where}; pools: "
          f"{', '.join(config.pools)}; state and logs in {state_dir}/", flush=True)
    if url_file is not None and url_file.resolve() != stack_url_file().resolve():
        # the CLI finds the file from this folder, or from anywhere by the variable
        print(f"  first:   export {STATE_DIR_ENV}={state_dir.resolve()}", flush=True)
    print(f"  submit:  switchyard submit embed --model {model}{flag} \"hello\"", flush=True)
    print(f"  status:  switchyard status{flag}    live: switchyard top{flag}", flush=True)
    print("  Ctrl-C stops everything.", flush=True)
