"""Fixtures: a real redis-server per test session (free port, temp folder), a config with
a key prefix of its own per test, and in-process workers that are always stopped."""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.cluster import ClusterNode

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.settings import RedisSettings
from switchyard.ops.redis_cluster import RedisCluster
from switchyard.ops.redis_server import RedisServer
from switchyard.workers.engines import EchoEngine, Engine
from switchyard.workers.memory import MemoryProbe
from switchyard.workers.runtime import Worker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Child processes get no working directory on sys.path (``python -m`` would add it), so
# from the repository root they see only what is installed, as they would anywhere else.
os.environ["PYTHONSAFEPATH"] = "1"


class _InstalledNamesOnly(importlib.abc.MetaPathFinder):
    """Refuses the folders' bare names (``broker``, ...). pytest puts the repository root
    on sys.path for the ``tests`` package, where they would import; installed, only
    ``switchyard.broker`` and the others exist, so code that names a folder (an import, or
    a string such as ``resources.files("broker")``) must fail here too."""

    FOLDERS = frozenset({"broker", "dispatcher", "workers", "ops"})

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.FOLDERS:
            raise ModuleNotFoundError(f"No module named {fullname!r} (installed as "
                                      f"switchyard.{fullname})", name=fullname)
        return None


sys.meta_path.insert(0, _InstalledNamesOnly())


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop, pause (SIGSTOP) or kill clients of;
    resumed and stopped at teardown whatever the test did. Its password: ``OWN_PASSWORD``."""
    server = RedisServer(tmp_path / "own-redis", password=OWN_PASSWORD).start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


OWN_PASSWORD = "own-secret"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``cluster`` that uses Redis runs twice: on the session's single server
    and on the session's Redis Cluster (``broker`` names which); ``single_node`` (a test
    of one server's behaviour, in a module marked ``cluster``) opts out."""
    marked = metafunc.definition.get_closest_marker
    if ("redis_url" in metafunc.fixturenames and marked("cluster") is not None
            and marked("single_node") is None):
        metafunc.parametrize("broker", ["single", "cluster"], indirect=True)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "single"))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """3 masters with a replica each, for the whole session (tests use prefixes of their
    own); a test that fails a node over uses a cluster of its own."""
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, broker: str) -> str:
    if broker == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


FAST_TOML = """
[redis]
prefix = "{prefix}"
[worker]
block_ms = 50
heartbeat_s = 0.2
heartbeat_ttl_s = 2
"""
"""The head of a test's TOML config: its Redis prefix (``.format(prefix=...)``) and worker
timings fast enough for tests (what :func:`make_config` sets)."""


def make_config(prefix: str, **pools: dict[str, Any]) -> SwitchyardConfig:
    """A config with the echo pool (and any others given) and fast worker timings. Each
    pool has a model of its name (a chat model for generate pools); ``echo-chat`` is the
    echo pool's chat model."""
    pool_specs: dict[str, Any] = {"echo": {"engine": "echo"}, **pools}
    models = {name: {"pool": name,
                     "kind": "chat" if spec["engine"] in ("generate", "served") else "embed"}
              for name, spec in pool_specs.items()}
    return SwitchyardConfig.model_validate({
        "redis": {"prefix": prefix},
        "worker": {"block_ms": 50, "heartbeat_s": 0.2, "heartbeat_ttl_s": 2},
        "pools": pool_specs,
        "models": {**models, "echo-chat": {"pool": "echo", "kind": "chat"}},
    })


@pytest.fixture
def prefix() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def config(prefix: str) -> SwitchyardConfig:
    return make_config(prefix)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    settings = RedisSettings.from_url(redis_url)
    client: redis.Redis = (
        redis.RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in settings.nodes],
                           decode_responses=True)  # type: ignore[assignment]
        if settings.cluster else redis.Redis.from_url(redis_url, decode_responses=True))
    yield client
    client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = RedisSettings.from_url(redis_url).connect()
    yield client
    await client.aclose()


StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(redis_url: str) -> AsyncIterator[StartWorker]:
    """Start in-process workers; every one is stopped (drained) at teardown."""
    running: list[tuple[asyncio.Event, asyncio.Task[Any], aioredis.Redis]] = []

    async def start(config: SwitchyardConfig, pool: str = "echo",
                    engine: Engine | None = None, probe: MemoryProbe | None = None) -> Worker:
        client = RedisSettings.from_url(redis_url).connect()
        worker = Worker(client, config, pool, engine or EchoEngine(), probe=probe)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        running.append((stop, task, client))
        while not await client.zcard(f"{config.redis.prefix}:{{{pool}}}:workers"):
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return worker

    yield start
    for stop, _, _ in running:
        stop.set()
    for _, task, client in running:
        await asyncio.wait_for(task, 30)
        await client.aclose()


@pytest.fixture
def tmp_config_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "switchyard.toml"
        path.write_text(text)
        return path

    return write
