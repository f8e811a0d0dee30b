"""A real batch stack for the batch API's tests: echo workers (a quick pool and a slow
one), a gateway with two tenants' keys and a batch worker, all processes, on the session's
redis-server; files in the test's own folder."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.ops.processes import BatchWorkerProcess, GatewayProcess, WorkerProcess
from switchyard.ops.redis_server import RedisServer, free_port
from tests.conftest import FAST_TOML
from tests.dispatcher.gateway.conftest import KEY_ALPHA, KEY_BETA, digest

CONFIG = FAST_TOML + """
[batch]
files_dir = "{files}"
lease_s = 1
window_s = {window_s}
max_lines = 2000
max_file_bytes = 400000
in_flight = 50
list_price_in = 0.5
[tenants.alpha]
api_keys_sha256 = ["{alpha}"]
[tenants.beta]
api_keys_sha256 = ["{beta}"]
[pools.echo]
engine = "echo"
[pools.slow]
engine = "echo"
max_batch = 4
delay_ms = 40
cost_per_hour = 3.6
[models.echo]
pool = "echo"
[models.echo-chat]
pool = "echo"
kind = "chat"
[models.slow]
pool = "slow"
"""

ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchStack:
    url: str
    redis_url: str
    config: SwitchyardConfig
    config_path: Path
    folder: Path
    batch_worker: BatchWorkerProcess
    slow_metrics: str

    def sdk(self, key: str = KEY_ALPHA) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)


def write_config(folder: Path, window_s: float = 86_400) -> Path:
    path = folder / "batch.toml"
    path.write_text(CONFIG.format(prefix="b" + secrets.token_hex(4), files=folder / "files",
                                  window_s=window_s, alpha=digest(KEY_ALPHA),
                                  beta=digest(KEY_BETA)))
    return path


@pytest.fixture(scope="module")
def batch_stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[BatchStack]:
    folder = tmp_path_factory.mktemp("batches")
    path = write_config(folder)
    config = load_config(path, environ={})
    url = redis_server.url
    metrics = free_port()
    slow = WorkerProcess("slow", url, path, config)
    slow.args += ["--metrics-port", str(metrics)]
    with WorkerProcess("echo", url, path, config), slow, GatewayProcess(url, path) as gateway, \
            BatchWorkerProcess(url, path) as batch_worker:
        yield BatchStack(gateway.url, url, config, path, folder, batch_worker,
                         f"http://127.0.0.1:{metrics}/metrics")


def request_line(custom_id: str, text: str, model: str = "echo",
                 url: str = "/v1/embeddings") -> str:
    body: dict[str, Any] = ({"model": model, "input": text} if url == "/v1/embeddings" else
                            {"model": model, "messages": [{"role": "user", "content": text}]})
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def submit(client: openai.OpenAI, lines: list[str],
           endpoint: str = "/v1/embeddings") -> Any:
    upload = client.files.create(file=("in.jsonl", ("\n".join(lines) + "\n").encode()),
                                 purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint=endpoint,  # type: ignore[arg-type]
                                 completion_window="24h")


def wait_for(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = ENDED,
             timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.1)


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    return [json.loads(raw) for raw in client.files.content(file_id).text.splitlines()]
