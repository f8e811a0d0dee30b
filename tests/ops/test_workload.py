"""Workload files: the example parses, bad ones get a typed error naming the problem,
traces replay, and ``--from-redis`` builds one from the counted arrivals."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest

from switchyard.broker.config import load_config
from switchyard.broker.stats import Minute, StreamCounters
from switchyard.ops.planning.errors import PlanningError, WorkloadError
from switchyard.ops.planning.workload import (
    Workload,
    dump_workload,
    load_workload,
    workload_from_counters,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "plan"


def test_the_example_workload_parses_against_its_config() -> None:
    config = load_config(EXAMPLES / "switchyard.toml")
    workload = load_workload(EXAMPLES / "workload.toml", config)
    assert {t.priority for t in workload.traffic} == {"interactive", "standard", "batch"}
    nightly = next(t for t in workload.traffic if t.daily)
    assert nightly.peak_rate() == 20.0
    assert workload.slo["interactive"].wait_p99_s == 0.5


@pytest.mark.parametrize(("body", "says"), [
    ('[[traffic]]\nmodel = "nope"\nrate = 1', "models not in the config: nope"),
    ('[[traffic]]\nmodel = "echo"\nrate = 1\ndaily = ' + str([1] * 24), "exactly one of"),
    ('[[traffic]]\nmodel = "echo"\ndaily = [1, 2]', "at least 24"),
    ('[[traffic]]\nmodel = "echo"\nrate = -1', "greater than or equal to 0"),
    ('[[traffic]]\nmodel = "echo"\nrate = 1\nburst = {seconds = 90, every = 60}',
     "cannot last longer"),
    ("traffic = []", "at least 1"),
    ("[[traffic]\n", "workload"),
])
def test_a_bad_workload_is_a_typed_error(tmp_path: Path, body: str, says: str) -> None:
    path = tmp_path / "w.toml"
    path.write_text(body)
    with pytest.raises(WorkloadError, match=r"w\.toml") as caught:
        load_workload(path, load_config(None))
    assert says in str(caught.value)
    assert isinstance(caught.value, PlanningError)


def test_a_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="No such file"):
        load_workload(tmp_path / "absent.toml", load_config(None))


def test_a_trace_replays_its_arrivals_and_a_bad_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"t": 0.5, "input_tokens": 9}\n\n{"t": 0.25}\n'
                                      '{"t": 99}\n')
    workload = Workload.model_validate({"traffic": [{"model": "echo", "trace": "t.jsonl"}]})
    arrivals = workload.traffic[0].arrivals(10, random.Random(1), tmp_path)
    assert arrivals == [(0.25, 1, 0), (0.5, 9, 0)]
    (tmp_path / "t.jsonl").write_text('{"t": 1}\n{"x": 2}\n')
    with pytest.raises(WorkloadError, match="line 2"):
        workload.traffic[0].arrivals(10, random.Random(1), tmp_path)


def test_from_counters_takes_the_last_hours_rates_and_round_trips() -> None:
    config = load_config(None)
    minutes = tuple(Minute(m, 600, 6_000) for m in range(100, 110))  # 10 minutes, 10/s
    counters = {("echo", "interactive"): [StreamCounters(minutes=minutes)],
                ("echo", "batch"): [StreamCounters()]}
    workload = workload_from_counters(config, counters)  # type: ignore[arg-type]
    [traffic] = workload.traffic
    assert (traffic.model, traffic.priority, traffic.rate) == ("echo", "interactive", 10.0)
    assert traffic.input_tokens.mean == 10.0
    again = Workload.model_validate(tomllib.loads(dump_workload(workload)))
    assert again == workload
    with pytest.raises(WorkloadError, match="nothing was offered"):
        workload_from_counters(config, {("echo", "batch"): [StreamCounters()]})


def test_planning_a_provider_bridge_pool_says_what_to_do_instead() -> None:
    from switchyard.ops.planning.cli import plan_workload

    config = load_config(None)
    cloud = next(m for m, r in config.models.items() if config.pools[r.pool].engine == "bridge")
    workload = Workload.model_validate({"traffic": [{"model": cloud, "rate": 1.0}]})
    with pytest.raises(PlanningError, match="provider bridge"):
        plan_workload(config, workload, {}, Path())
