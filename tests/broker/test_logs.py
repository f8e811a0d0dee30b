"""JSON log lines: the formatter, the format's choice, and a real worker logging in it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from switchyard.broker import logs
from switchyard.broker.config import load_config
from switchyard.broker.errors import ConfigError
from switchyard.ops.processes import WorkerProcess


def test_a_json_line_carries_the_message_the_join_fields_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("switchyard.t").makeRecord(
            "switchyard.t", logging.WARNING, __file__, 1, "job %s done", ("j1",),
            sys.exc_info(), extra={"job_id": "echo.0.ab", "tenant": "acme",
                                   "timings": {"total_ms": 1.5}, "unlisted": "x"})
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["msg"] == "job j1 done" and line["level"] == "warning"
    assert line["logger"] == "switchyard.t" and line["ts"].endswith("Z")
    assert line["job_id"] == "echo.0.ab" and line["tenant"] == "acme"
    assert line["timings"] == {"total_ms": 1.5} and "unlisted" not in line
    assert "ValueError: boom" in line["exc"]


def test_the_format_is_text_or_json_from_the_flag_else_the_environment(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(logs.LOG_FORMAT_ENV, raising=False)
    assert logs.log_format() == "text"
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "json")
    assert logs.log_format() == "json" and logs.log_format("text") == "text"
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "xml")
    with pytest.raises(ConfigError, match="text or json"):
        logs.log_format()


def test_a_worker_started_with_json_logs_writes_only_json_lines(
    tmp_path: Path, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.toml"
    path.write_text(f'[redis]\nprefix = "{prefix}"\n[pools.echo]\nengine = "echo"\n'
                    '[models.echo]\npool = "echo"\n')
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "json")  # as `--log-format json` exports it
    worker = WorkerProcess("echo", redis_url, path, load_config(path), log=tmp_path / "w.log")
    with worker:
        pass
    lines = [json.loads(line) for line in (tmp_path / "w.log").read_text().splitlines()
             if line.strip()]
    assert any("serving pool echo" in line["msg"] for line in lines)
    assert any("drained" in line["msg"] for line in lines)
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
