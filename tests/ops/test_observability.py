"""The operations layer against a live stack: Redis, the gateway, an echo worker, a bridge
worker on a fake provider, an exporter, and a real ``prometheus`` scraping them with the
rules `switchyard alerts render` writes. After real traffic (the official openai SDK),
every metric selector in the dashboards and rules returns series through Prometheus's
HTTP API, and every expression evaluates; `switchyard top` renders what is there; and one
request's log lines from the gateway and the worker join on its job id and trace parent.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from rich.console import Console

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.settings import RedisSettings
from switchyard.ops import dashboards, top
from switchyard.ops.exporter import read_snapshot
from switchyard.ops.fake_provider import FakeProfile, FakeProvider
from switchyard.ops.processes import (
    ExporterProcess,
    GatewayProcess,
    PrometheusProcess,
    WorkerProcess,
)
from switchyard.ops.prometheus_config import scrape_config
from switchyard.ops.redis_server import free_port
from tests.conftest import FAST_TOML
from tests.ops.prometheus_tools import tool

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-alpha-" + secrets.token_hex(8)
SLOW_KEY = "sk-slow-" + secrets.token_hex(8)
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

CONFIG = FAST_TOML + """
[gateway]
key_cache_s = 0.5
[tenants.alpha]
api_keys_sha256 = ["{alpha}"]
[tenants.slow]
api_keys_sha256 = ["{slow}"]
rps = 0.001
burst_s = 1000
[providers.fake]
kind = "openai"
base_url = "{fake}"
[pools.echo]
engine = "echo"
[pools.cloud]
engine = "bridge"
[[pools.cloud.targets]]
provider = "fake"
model = "fake-chat"
price_in = 1.0
price_out = 2.0
[models.echo]
pool = "echo"
[models.echo-chat]
pool = "echo"
kind = "chat"
[models.cloud]
pool = "cloud"
kind = "chat"
"""


@dataclass(frozen=True)
class Live:
    config: SwitchyardConfig
    redis_url: str
    prometheus: str
    rules: Path
    gateway_log: Path
    worker_log: Path


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[Live]:
    prometheus = tool("prometheus")
    folder = tmp_path_factory.mktemp("observability")
    url = str(redis_server.url)
    with FakeProvider(FakeProfile(latency_ms=2)) as fake:
        path = folder / "switchyard.toml"
        path.write_text(CONFIG.format(prefix="o" + secrets.token_hex(4), alpha=_digest(KEY),
                                      slow=_digest(SLOW_KEY), fake=fake.url))
        config = load_config(path)
        rules = folder / "rules.yml"
        subprocess.run([str(ROOT / ".venv/bin/switchyard"), "alerts", "render", "--config",
                        str(path), "--out", str(rules)], check=True)
        json_logs = {"SWITCHYARD_LOG_FORMAT": "json"}
        metrics = [free_port(), free_port()]
        with WorkerProcess("echo", url, path, config, metrics_port=metrics[0],
                           env=json_logs, log=folder / "worker-echo.log"), \
                WorkerProcess("cloud", url, path, config, metrics_port=metrics[1]), \
                GatewayProcess(url, path, env=json_logs, log=folder / "gateway.log") as gw, \
                ExporterProcess(url, path) as exporter:
            (folder / "prometheus.yml").write_text(scrape_config(
                [gw.url.removeprefix("http://")], [exporter.url.removeprefix("http://")],
                [f"127.0.0.1:{p}" for p in metrics], [str(rules)], interval="1s"))
            _traffic(gw.url)
            with PrometheusProcess(folder / "prometheus.yml", folder,
                                   binary=prometheus) as prom:
                yield Live(config, url, prom.url, rules, folder / "gateway.log",
                           folder / "worker-echo.log")


def _traffic(url: str) -> None:
    """Embeddings at every priority, streamed chat, a provider call, tenant refusals."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    for priority in ("interactive", "standard", "batch") * 5:
        client.embeddings.create(model="echo", input="hello",
                                 extra_headers={"X-Switchyard-Priority": priority})
    client.embeddings.create(model="echo", input="traced", extra_headers={
        "traceparent": TRACE, "X-Switchyard-Priority": "interactive"})
    for _ in range(3):
        stream = client.chat.completions.create(
            model="echo-chat", stream=True, messages=[{"role": "user", "content": "hi"}])
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    client.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "x"}])
    slow = openai.OpenAI(base_url=f"{url}/v1", api_key=SLOW_KEY, max_retries=0)
    refused = 0
    for _ in range(3):
        try:
            slow.embeddings.create(model="echo", input="too often")
        except openai.RateLimitError:
            refused += 1
    assert refused >= 1


def _query(live: Live, expr: str) -> dict[str, Any]:
    reply = httpx.get(f"{live.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = reply.json()
    assert body.get("status") == "success", (expr, body)
    return body


def _substituted(expr: str) -> str:
    """A dashboard expression as Grafana sends it: every pool, a 1 m rate interval."""
    return expr.replace("$pool", ".*").replace("$__rate_interval", "1m")


def _expressions(live: Live) -> list[str]:
    exprs = []
    for name in dashboards.DASHBOARDS:
        model = json.loads((ROOT / "ops/grafana/dashboards" / f"{name}.json").read_text())
        exprs += [_substituted(t["expr"]) for p in model["panels"] for t in p["targets"]]
        for variable in model["templating"]["list"]:
            exprs.append(re.sub(r"label_values\((\w+), \w+\)", r"\1",
                                variable["query"]["query"]))
    exprs += re.findall(r'^\s+expr: (".*")$', live.rules.read_text(), re.M)
    return [json.loads(e) if e.startswith('"') else e for e in exprs]


SELECTOR = re.compile(r"\b((?:switchyard[\w:]*|up))(\{[^}]*\})?")


def test_every_selector_in_the_dashboards_and_rules_has_series(live: Live) -> None:
    exprs = _expressions(live)
    selectors = sorted({m.group(0) for e in exprs for m in SELECTOR.finditer(e)})
    assert len(selectors) > 30
    missing: list[str] = selectors
    deadline = time.monotonic() + 60
    while missing and time.monotonic() < deadline:
        missing = [s for s in missing if not _query(live, s)["data"]["result"]]
        if missing:
            time.sleep(1)
    assert not missing, f"no series for: {missing}"
    for expr in exprs:  # every expression evaluates (an empty answer is allowed here)
        _query(live, expr)


def test_the_exporter_counts_what_admission_did(live: Live) -> None:
    """Through Prometheus: admissions and tenant refusals as the scripts counted them,
    spend by provider and tenant from the bridge, the echo worker's wait histogram."""
    def value(expr: str) -> float:
        result = _query(live, expr)["data"]["result"]
        return sum(float(r["value"][1]) for r in result)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and value(
            'switchyard_provider_spend_usd_total{provider="fake"}') == 0:
        time.sleep(1)
    admitted = value('sum(switchyard_admission_total{pool="echo",verdict="admitted"})')
    assert admitted >= 16 + 3 + 1  # embeddings, streamed chats, the slow tenant's first
    assert value('sum(switchyard_admission_total{verdict="tenant",reason="rps"})') >= 1
    assert value('switchyard_provider_spend_usd_total{provider="fake"}') > 0
    assert value('switchyard_tenant_spend_usd_total{tenant="alpha"}') > 0
    assert value('sum(switchyard_queue_wait_seconds_count{pool="echo",'
                 'priority="interactive"})') >= 6
    assert value('sum(switchyard_arrivals_last_hour{pool="echo"})') >= admitted
    assert value('switchyard_workers_alive{pool="echo"}') == 1


def test_top_renders_the_live_stack_into_a_fixed_size_terminal(live: Live) -> None:
    async def snapshot() -> Any:
        redis = RedisSettings.from_url(live.redis_url).connect()
        try:
            return await read_snapshot(redis, live.config)
        finally:
            await redis.aclose()
    before = asyncio.run(snapshot())
    now = asyncio.run(snapshot())
    console = Console(file=io.StringIO(), width=80, height=50, record=True,
                      color_system=None)
    console.print(top.render(now, before, live.config))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text  # nothing cut short at 80 columns
    parts = re.split(r"^(pools|workers|providers|spend) +$", text, flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert list(sections) == ["pools", "workers", "providers", "spend"]
    pools = sections["pools"]
    assert re.search(r"(?m)^ *echo +inter +\d+ +\d+ ", pools)
    assert re.search(r"(?m)^ *cloud +inter +\d+ ", pools)
    # a pool's wait p99, from its workers' heartbeats
    assert re.search(r" \d+ ms +[\d.]+ +\d+ ", pools)
    assert re.search(r"(?m)^ *echo +[\w.-]+ +none +\d+/32 ", sections["workers"])
    assert re.search(r"(?m)^ *cloud +[\w.-]+ +providers +\d+/32 ", sections["workers"])
    assert re.search(r"(?m)^ *fake +fake-chat +closed +0% +- *$", sections["providers"])
    assert re.search(r"(?m)^ *fake +[\d.]+ +0\.0000\d\d *$", sections["spend"])


def test_one_requests_log_lines_join_on_job_id_and_trace_parent(live: Live) -> None:
    deadline = time.monotonic() + 10
    while True:
        gateway = [json.loads(line) for line in live.gateway_log.read_text().splitlines()
                   if line.startswith("{")]
        worker = [json.loads(line) for line in live.worker_log.read_text().splitlines()
                  if line.startswith("{")]
        asked = [line for line in gateway if line.get("traceparent") == TRACE]
        done = [line for line in worker if line.get("traceparent") == TRACE]
        if (asked and done) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(asked) == 1 and len(done) == 1, (asked, done)
    assert asked[0]["job_id"] == done[0]["job_id"]
    assert done[0]["pool"] == "echo" and done[0]["priority"] == "interactive"
    assert done[0]["tenant"] == "alpha" and done[0]["outcome"] == "succeeded"
    assert done[0]["timings"]["e2e_ms"] >= 0
    # Every other request got a trace parent of its own.
    others = {line["traceparent"] for line in gateway if line.get("job_id")} - {TRACE}
    assert len(others) >= 15


def test_top_runs_in_a_real_terminal_refreshes_and_quits_on_q(live: Live, tmp_path: Path
                                                               ) -> None:
    """`switchyard top` in a tmux pane of 80x30 (a terminal as over SSH): it draws the
    pools, workers and providers, and `q` ends it."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed")
    session = "sy-top-" + secrets.token_hex(4)
    config = tmp_path / "switchyard.toml"
    config.write_text(CONFIG.format(prefix=live.config.redis.prefix, alpha="0" * 64,
                                    slow="1" * 64, fake="http://127.0.0.1:9"))
    command = (f"env -u COLUMNS -u LINES {ROOT / '.venv/bin/switchyard'} top --config "
               f"{config} --redis-url {live.redis_url} --interval 0.2; echo EXITED; sleep 30")
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "30",
                    command], check=True)

    def screen() -> str:
        return subprocess.run([tmux, "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True, check=True).stdout
    try:
        deadline = time.monotonic() + 20
        while "workers" not in screen() and time.monotonic() < deadline:
            time.sleep(0.2)
        first = screen()
        assert re.search(r"(?m)^ *echo +inter +\d+ ", first), first
        assert re.search(r"(?m)^ *fake +fake-chat +closed ", first), first
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
        while "EXITED" not in screen() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "EXITED" in screen()
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)
