"""docker-compose.yml validated by Compose's own `config` command (no engine needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import compose

ROOT = Path(__file__).resolve().parents[2]


def compose_services() -> dict[str, Any]:
    """docker-compose.yml's services as the Compose binary's `config` resolves them."""
    binary = Path(compose.__file__).parent / "docker-compose"
    out = subprocess.run([str(binary), "-f", str(ROOT / "docker-compose.yml"), "config",
                          "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    services: dict[str, Any] = json.loads(out.stdout)["services"]
    return services


def test_compose_file_is_valid() -> None:
    services = compose_services()
    assert {"redis", "worker-minilm", "worker-echo", "worker-tiny-llama", "worker-cloud",
            "fake-provider", "watchdog"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["watchdog"]["command"] == ["watchdog"]
    assert services["worker-minilm"]["command"][:3] == ["worker", "--pool", "minilm"]
    assert services["batch-worker"]["command"] == ["batch-worker"]
    files = {v["target"]: v["source"] for v in services["gateway"]["volumes"]}
    assert files == {v["target"]: v["source"] for v in services["batch-worker"]["volumes"]}
    assert services["gateway"]["environment"]["SWITCHYARD_BATCH__FILES_DIR"] in files


def test_rq_dashboard_runs_only_when_asked_for() -> None:
    binary = Path(compose.__file__).parent / "docker-compose"
    args = [str(binary), "-f", str(ROOT / "docker-compose.yml")]
    plain = subprocess.run([*args, "config", "--services"], capture_output=True, text=True,
                           timeout=60)
    asked = subprocess.run([*args, "--profile", "rq-dashboard", "config", "--services"],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == asked.returncode == 0
    assert "rq-dashboard" not in plain.stdout.split()
    assert "rq-dashboard" in asked.stdout.split()


def test_a_broken_compose_file_fails(tmp_path: Path) -> None:
    binary = Path(compose.__file__).parent / "docker-compose"
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  x:\n    image: 3\n    depends_on: [nowhere]\n")
    out = subprocess.run([str(binary), "-f", str(bad), "config"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
