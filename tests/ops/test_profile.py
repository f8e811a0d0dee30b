"""`switchyard profile`: a pool's service curve measured through the real queue (echo
workers of a known curve on a real redis-server), written as a versioned JSON file; and
`switchyard plan` on the example workload prints a plan and writes its config and plot."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.ops.fake_provider import FakeProfile, FakeProvider
from switchyard.ops.planning.errors import ProfileError
from switchyard.ops.planning.profile import load_profile, nominal_profile
from switchyard.ops.planning.profiling import batch_sizes, measure
from tests.conftest import FAST_TOML

EXAMPLES = Path(__file__).parents[2] / "examples" / "plan"
CONFIG = FAST_TOML + """
[pools.echo]
engine = "echo"
max_batch = 4
delay_ms = 30
job_delay_ms = 10
[models.echo]
pool = "echo"
"""


def test_batch_sizes_double_up_to_the_largest() -> None:
    assert batch_sizes(1) == [1]
    assert batch_sizes(8) == [1, 2, 4, 8]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]


def test_a_profile_measures_the_workers_curve(tmp_path: Path, redis_url: str,
                                              prefix: str) -> None:
    path = tmp_path / "switchyard.toml"
    path.write_text(CONFIG.format(prefix=prefix))
    config = load_config(path)
    profile = measure(path, config, "echo", redis_url=redis_url, jobs=40)
    assert [p.batch for p in profile.points] == [1, 2, 4]
    for point in profile.points:
        nominal = 30 + 10 * point.batch  # what the echo engine sleeps per batch
        assert nominal - 1 <= point.batch_ms < 2 * nominal + 30, point
        assert point.jobs_per_s == pytest.approx(point.batch * 1000 / point.batch_ms, rel=0.01)
    assert profile.hardware.cpus >= 1 and profile.source == "measured"
    assert sorted(tmp_path.iterdir()) == [path]  # the workers' logs went to a temp folder
    out = tmp_path / "echo.json"
    profile.dump(out)
    again = load_profile(out)
    assert again == profile and json.loads(out.read_text())["version"] == 1
    assert again.batch_ms(3) == pytest.approx(
        (profile.points[1].batch_ms + profile.points[2].batch_ms) / 2)


def test_profile_files_and_pools_without_one_are_typed_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 2}')
    with pytest.raises(ProfileError, match=r"bad\.json"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="switchyard profile --pool minilm"):
        nominal_profile("minilm", SwitchyardConfig().pools["minilm"])


def test_plan_on_the_example_prints_a_plan_and_writes_its_config_and_plot(
        tmp_path: Path) -> None:
    out = tmp_path / "plan"
    done = subprocess.run(
        [sys.executable, "-m", "switchyard.ops", "plan", str(EXAMPLES / "workload.toml"),
         "--config", str(EXAMPLES / "switchyard.toml"),
         "--profile", str(EXAMPLES / "minilm.json"), "--out", str(out), "--seconds", "60"],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pool minilm" in done.stdout and "  plan: " in done.stdout
    assert "all on providers" in done.stdout and "total: $" in done.stdout
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    snippet = tomllib.loads((tmp_path / "plan.toml").read_text())
    pool = snippet["pools"]["minilm"]
    assert pool["wait_targets"]["interactive"] in (0.5, 0.35, 0.25)  # the SLO, scaled
    assert pool["caps"]["interactive"] >= 1
    config = load_config(EXAMPLES / "switchyard.toml")
    merged = config.pools["minilm"].model_copy(update={})
    assert type(merged).model_validate({**merged.model_dump(), **pool})  # it validates
    as_json = subprocess.run(
        [sys.executable, "-m", "switchyard.ops", "plan", str(EXAMPLES / "workload.toml"),
         "--config", str(EXAMPLES / "switchyard.toml"), "--json",
         "--profile", str(EXAMPLES / "minilm.json"), "--out", str(out), "--seconds", "20"],
        capture_output=True, text=True, timeout=300, check=True)
    [plan] = json.loads(as_json.stdout)["plans"]
    assert plan["pool"] == "minilm" and plan["profile"]["source"] == "measured"
    assert set(plan["alternatives"]) == {"all on GPUs", "all on providers", "no spill"}


def test_plan_without_a_workload_says_what_it_needs() -> None:
    done = subprocess.run([sys.executable, "-m", "switchyard.ops", "plan"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--from-redis or --live" in done.stdout


def test_a_generate_profile_records_first_token_and_per_token_times(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    path = tmp_path / "switchyard.toml"
    path.write_text(FAST_TOML.format(prefix=prefix) + """
[pools.tiny-llama]
engine = "generate"
model = "builtin:tiny-llama"
device = "cpu"
max_batch = 2
[models.tiny-llama]
pool = "tiny-llama"
kind = "chat"
""")
    profile = measure(path, load_config(path), "tiny-llama", redis_url=redis_url, jobs=8,
                      output_tokens=6)
    assert [p.batch for p in profile.points] == [1, 2]
    for point in profile.points:
        assert point.output_tokens == 6 and point.jobs_per_s > 0
        assert point.ttft_ms is not None and point.ttft_ms > 0
        assert point.per_token_ms is not None and point.per_token_ms > 0
    assert profile.ttft_ms(2) == profile.points[1].ttft_ms


@pytest.mark.parametrize("failing", [False, True])
def test_a_bridge_profile_records_latency_and_errors(tmp_path: Path, redis_url: str,
                                                     prefix: str, failing: bool) -> None:
    fault = FakeProfile(latency_ms=30, error_status=400 if failing else None)
    with FakeProvider(fault) as fake:
        path = tmp_path / "switchyard.toml"
        path.write_text(FAST_TOML.format(prefix=prefix) + f"""
[providers.fake]
kind = "openai"
base_url = "{fake.url}"
[pools.cloud]
engine = "bridge"
[[pools.cloud.targets]]
provider = "fake"
model = "m"
[models.cloud]
pool = "cloud"
""")
        profile = measure(path, load_config(path), "cloud", redis_url=redis_url, jobs=16)
    assert profile.points == []
    [target] = profile.targets
    assert target.jobs == 16
    if failing:
        assert (target.provider, target.error_rate) == ("-", 1.0)
    else:
        assert (target.provider, target.model, target.error_rate) == ("fake", "m", 0.0)
        assert 30 <= target.latency_p50_ms <= target.latency_p99_ms
