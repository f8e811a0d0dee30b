"""The Prometheus rules and config against the real tools (Debian's ``prometheus``
package: ``promtool``): ``check config``, ``check rules``, and ``test rules`` unit tests
that fire each alert on synthetic series and keep every one quiet on healthy ones."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from switchyard.broker.config import load_config
from switchyard.ops import alerts
from switchyard.ops.prometheus_config import COMPOSE, scrape_config
from switchyard.ops.yamlish import dump
from tests.ops.prometheus_tools import tool

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 5.0
STREAM = 'pool="echo",partition="0",priority="standard"'
WAIT = 'pool="echo",priority="interactive"'


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules rendered from a config with a spend budget (so every alert is there)."""
    folder = tmp_path_factory.mktemp("rules")
    (folder / "switchyard.toml").write_text(f"[monitoring]\nspend_usd_per_hour = {BUDGET}\n")
    path = folder / "rules.yml"
    assert subprocess.run([str(ROOT / ".venv/bin/switchyard"), "alerts", "render", "--config",
                           str(folder / "switchyard.toml"), "--out", str(path)],
                          check=False).returncode == 0
    return path


def test_the_committed_files_are_what_the_code_writes() -> None:
    assert (ROOT / "ops/prometheus/rules.yml").read_text() == alerts.render(load_config(None))
    assert (ROOT / "ops/prometheus/prometheus.yml").read_text() == COMPOSE


def test_promtool_checks_the_config_and_the_rules(rules: Path, tmp_path: Path) -> None:
    promtool = tool("promtool")
    local = tmp_path / "prometheus.yml"
    local.write_text(scrape_config(["127.0.0.1:8080"], ["127.0.0.1:9200"],
                                   ["127.0.0.1:9100"], [str(rules)]))
    for args in (["check", "config", str(local)],
                 ["check", "config", "--syntax-only", str(ROOT / "ops/prometheus/prometheus.yml")],
                 ["check", "rules", str(rules)],
                 ["check", "rules", str(ROOT / "ops/prometheus/rules.yml")]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    names = re.findall(r'^\s+- alert: "(\w+)"', rules.read_text(), re.M)
    assert sorted(names) == sorted(alerts.ALERTS)


def _series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def _waits(within: str) -> list[dict[str, str]]:
    """100 interactive jobs a minute for two hours, ``within`` of them within target."""
    return [_series(f'switchyard_queue_wait_seconds_bucket{{{WAIT},le="1.0"}}',
                    f"0+{within}x120"),
            _series(f"switchyard_queue_wait_seconds_count{{{WAIT}}}", "0+100x120")]


# Per alert: (series that fire it, healthy ones, eval time, the firing alert's labels).
CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, str]], str, dict[str, str]]] = {
    "SwitchyardWaitSLOFastBurn": (_waits("50"), _waits("100"), "70m",
                                  {"pool": "echo", "severity": "page"}),
    "SwitchyardWaitSLOSlowBurn": (_waits("90"), _waits("99.7"), "70m",
                                  {"pool": "echo", "severity": "ticket"}),
    "SwitchyardNoWorkers": (
        [_series(f"switchyard_queue_depth{{{STREAM}}}", "5x20"),
         _series('switchyard_workers_alive{pool="echo"}', "0x20")],
        [_series(f"switchyard_queue_depth{{{STREAM}}}", "5x20"),
         _series('switchyard_workers_alive{pool="echo"}', "1x20"),
         _series(f"switchyard_queue_drain_rate{{{STREAM}}}", "3x20")],
        "10m", {"pool": "echo", "severity": "page"}),
    "SwitchyardDrainStalled": (
        [_series(f"switchyard_queue_depth{{{STREAM}}}", "5x20"),
         _series(f"switchyard_queue_drain_rate{{{STREAM}}}", "0x20"),
         _series('switchyard_workers_alive{pool="echo"}', "2x20")],
        [_series(f"switchyard_queue_depth{{{STREAM}}}", "5x20"),
         _series(f"switchyard_queue_drain_rate{{{STREAM}}}", "4x20"),
         _series('switchyard_workers_alive{pool="echo"}', "2x20")],
        "10m", {"pool": "echo", "severity": "page"}),
    "SwitchyardDeadLettersGrowing": (
        [_series('switchyard_dead_letters{pool="echo"}', "0+1x30")],
        [_series('switchyard_dead_letters{pool="echo"}', "3x30")],
        "15m", {"pool": "echo", "severity": "ticket"}),
    "SwitchyardBreakerOpen": (
        [_series('switchyard_breaker_open{provider="fake",model="fake-chat"}', "1x20")],
        [_series('switchyard_breaker_open{provider="fake",model="fake-chat"}', "0x3 1x2 0x15")],
        "10m", {"provider": "fake", "model": "fake-chat", "severity": "ticket"}),
    "SwitchyardRejectionsHigh": (
        [_series(f'switchyard_admission_total{{{STREAM},verdict="rejected",reason=""}}',
                 "0+50x60"),
         _series(f'switchyard_admission_total{{{STREAM},verdict="admitted",reason=""}}',
                 "0+50x60")],
        [_series(f'switchyard_admission_total{{{STREAM},verdict="rejected",reason=""}}',
                 "0+1x60"),
         _series(f'switchyard_admission_total{{{STREAM},verdict="admitted",reason=""}}',
                 "0+99x60")],
        "30m", {"pool": "echo", "severity": "ticket"}),
    "SwitchyardRedisMemoryHigh": (
        [_series('switchyard_redis_memory_used_bytes{node="redis-a:7001"}', "95x20"),
         _series('switchyard_redis_maxmemory_bytes{node="redis-a:7001"}', "100x20")],
        [_series('switchyard_redis_memory_used_bytes{node="redis-a:7001"}', "50x20"),
         _series('switchyard_redis_maxmemory_bytes{node="redis-a:7001"}', "100x20"),
         _series('switchyard_redis_memory_used_bytes{node="redis-b:7002"}', "95x20"),  # no max
         _series('switchyard_redis_maxmemory_bytes{node="redis-b:7002"}', "0x20")],
        "10m", {"node": "redis-a:7001", "severity": "page"}),
    "SwitchyardSpendOverBudget": (
        [_series('switchyard_provider_spend_usd_total{provider="fake"}', "0+1x120")],
        [_series('switchyard_provider_spend_usd_total{provider="fake"}', "0+0.01x120")],
        "70m", {"severity": "ticket"}),
    "SwitchyardExporterDown": (
        [_series('up{job="switchyard-exporter",instance="e:9200"}', "0x20")],
        [_series('up{job="switchyard-exporter",instance="e:9200"}', "1x20")],
        "10m", {"job": "switchyard-exporter", "instance": "e:9200", "severity": "ticket"}),
}


def _annotations(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    return {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], v)
            for k, v in rule["annotations"].items()}


def test_promtool_unit_tests_fire_each_alert_and_keep_healthy_series_quiet(
    rules: Path, tmp_path: Path
) -> None:
    assert sorted(CASES) == sorted(alerts.ALERTS)
    config = load_config(None).model_copy(update={"monitoring": load_config(None).monitoring
                                                  .model_copy(update={
                                                      "spend_usd_per_hour": BUDGET})})
    by_name = {r["alert"]: r for g in alerts.rules(config)["groups"] for r in g["rules"]
               if "alert" in r}
    tests = []
    for name, (firing, healthy, at, labels) in CASES.items():
        fired = {"exp_labels": labels, "exp_annotations": _annotations(by_name[name], labels)}
        tests.append({"name": f"{name} fires", "interval": "1m", "input_series": firing,
                      "alert_rule_test": [{"eval_time": at, "alertname": name,
                                           "exp_alerts": [fired]}]})
        tests.append({"name": f"{name} stays quiet", "interval": "1m",
                      "input_series": healthy,
                      "alert_rule_test": [{"eval_time": at, "alertname": other,
                                           "exp_alerts": []} for other in alerts.ALERTS]})
    spec = tmp_path / "tests.yml"
    spec.write_text(dump({"rule_files": [str(rules)], "evaluation_interval": "1m",
                          "tests": tests}))
    done = subprocess.run([tool("promtool"), "test", "rules", str(spec)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.count("SUCCESS") >= 1
