"""The Grafana dashboards and their provisioning, and the compose stack's monitoring
services: every panel has the provisioned datasource and a query that promtool parses;
the committed JSON is what ``switchyard.ops.dashboards`` builds; compose wires
Prometheus, Grafana and the exporter to the files in ``ops/`` (validated by the Compose
binary itself)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from switchyard.ops import dashboards
from switchyard.ops.prometheus_config import JOBS
from switchyard.ops.yamlish import dump
from tests.ops.prometheus_tools import tool
from tests.ops.test_compose import compose_services

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops/grafana"


def _committed() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text())
            for path in sorted((GRAFANA / "dashboards").glob("*.json"))}


def test_the_committed_dashboards_are_what_the_code_builds() -> None:
    committed = _committed()
    assert sorted(committed) == sorted(dashboards.DASHBOARDS)
    for name, model in committed.items():
        assert model == dashboards.build(name), f"run `switchyard dashboards write` ({name})"


def test_every_panel_queries_the_provisioned_datasource() -> None:
    provisioned = (GRAFANA / "provisioning/datasources/prometheus.yml").read_text()
    uid = re.search(r"^\s+uid: (\S+)$", provisioned, re.M)
    assert uid is not None and uid.group(1) == dashboards.DATASOURCE_UID
    assert "url: http://prometheus:9090" in provisioned
    uids = set()
    for name, model in _committed().items():
        uids.add(model["uid"])
        assert model["panels"], name
        for panel in model["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": uid.group(1)}
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid.group(1)
                assert target["expr"].strip(), (name, panel["title"])
        for variable in model["templating"]["list"]:
            assert variable["datasource"]["uid"] == uid.group(1)
        cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in model["panels"]]
        assert len(cells) == len(set(cells)), f"{name}: panels overlap"
    assert len(uids) == len(dashboards.DASHBOARDS)


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, its variables substituted as Grafana would, as a recording rule:
    `promtool check rules` parses its PromQL."""
    exprs = [t["expr"].replace("$pool", ".*").replace("$__rate_interval", "1m")
             for model in _committed().values() for p in model["panels"]
             for t in p["targets"]]
    rules = tmp_path / "dashboards.yml"
    rules.write_text(dump({"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    done = subprocess.run([tool("promtool"), "check", "rules", str(rules)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(dump({"groups": [{"name": "x", "rules": [
        {"record": "dashboard:bad", "expr": "sum by (pool (switchyard_queue_depth)"}]}]}))
    assert subprocess.run([tool("promtool"), "check", "rules", str(bad)],
                          capture_output=True, check=False).returncode != 0


def test_compose_runs_prometheus_grafana_and_the_exporter_on_the_files_in_ops() -> None:
    services = compose_services()
    assert services["exporter"]["command"][:1] == ["exporter"]
    mounts = {s: {v["target"]: v["source"] for v in services[s].get("volumes", [])
                  if v["type"] == "bind"} for s in ("prometheus", "grafana")}
    assert mounts["prometheus"] == {
        "/etc/prometheus/prometheus.yml": str(ROOT / "ops/prometheus/prometheus.yml"),
        "/etc/prometheus/rules.yml": str(ROOT / "ops/prometheus/rules.yml")}
    assert mounts["grafana"] == {
        "/etc/grafana/provisioning": str(GRAFANA / "provisioning"),
        "/var/lib/grafana/dashboards": str(GRAFANA / "dashboards")}
    provider = (GRAFANA / "provisioning/dashboards/switchyard.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
    # Every target Prometheus scrapes is a service of the stack serving on that port.
    scraped = re.findall(r'^\s+- "([\w-]+):(\d+)"$',
                         (ROOT / "ops/prometheus/prometheus.yml").read_text(), re.M)
    assert len(scraped) >= 6 and all(f'job_name: "{j}"' in (
        ROOT / "ops/prometheus/prometheus.yml").read_text() for j in JOBS)
    for service, port in scraped:
        command = " ".join(services[service]["command"])
        assert f"--port {port}" in command or f"--metrics-port {port}" in command, service
