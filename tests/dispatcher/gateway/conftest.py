"""A real gateway process on a free port, with real worker processes behind it (echo, and
MiniLM for embeddings), on the session's redis-server; two tenants with a key each."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.ops.processes import GatewayProcess, WorkerProcess
from tests.conftest import FAST_TOML

KEY_ALPHA = "sk-alpha-" + secrets.token_hex(8)
KEY_BETA = "sk-beta-" + secrets.token_hex(8)
KEY_GAMMA = "sk-gamma-" + secrets.token_hex(8)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


CONFIG = FAST_TOML + """
[jobs]
idle_retry_after_s = 1.2
[gateway]
key_cache_s = 0.5
keepalive_s = 0.3
[tenants.default]
rps = 0.001
burst_s = 2000
[tenants.alpha]
api_keys_sha256 = ["{alpha}"]
[tenants.beta]
api_keys_sha256 = ["{beta}"]
[tenants.gamma]
api_keys_sha256 = ["{gamma}"]
rps = 0.001
burst_s = 1000
[pools.echo]
engine = "echo"
[pools.minilm]
engine = "embed"
[pools.full]
engine = "echo"
admission_control = false
[pools.full.caps]
standard = 1
[pools.parked]
engine = "echo"
[models.echo]
pool = "echo"
[models.echo-chat]
pool = "echo"
kind = "chat"
[models.minilm]
pool = "minilm"
[models.full]
pool = "full"
kind = "chat"
[models.parked]
pool = "parked"
kind = "chat"
"""


@dataclass(frozen=True)
class Stack:
    url: str
    """The gateway's base URL (``/v1`` for the openai SDK)."""
    redis_url: str
    config: SwitchyardConfig
    config_path: Path
    gateway: GatewayProcess

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the gateway's /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics").text
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if (line.startswith(f"{name}{{") and all(
                    f'{k}="{v}"' in line for k, v in labels.items())) or (
                    not want and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def write_config(folder: Path, **extra: str) -> Path:
    path = folder / "gateway.toml"
    path.write_text(CONFIG.format(prefix="g" + secrets.token_hex(4), alpha=digest(KEY_ALPHA),
                                  beta=digest(KEY_BETA), gamma=digest(KEY_GAMMA), **extra))
    return path


@pytest.fixture(scope="module", params=["single", "cluster"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    """The gateway with its workers, on the session's single Redis and on its cluster."""
    folder = tmp_path_factory.mktemp("gateway")
    path = write_config(folder)
    config = load_config(path)
    where = "redis_server" if request.param == "single" else "redis_cluster"
    url = str(request.getfixturevalue(where).url)
    with WorkerProcess("echo", url, path, config), WorkerProcess("minilm", url, path, config), \
            GatewayProcess(url, path) as gateway:
        yield Stack(gateway.url, url, config, path, gateway)
