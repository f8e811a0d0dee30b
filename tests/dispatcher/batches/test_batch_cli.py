"""`switchyard batch` (issue 18, point 5): submit a file, watch it, fetch its results,
cancel one, through the gateway with the key from ``$SWITCHYARD_API_KEY``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.dispatcher.batches.conftest import BatchStack, request_line, wait_for
from tests.dispatcher.gateway.conftest import KEY_ALPHA


def _cli(stack: BatchStack, *args: str, key: str | None = KEY_ALPHA
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_API_KEY"}
    if key is not None:
        env["SWITCHYARD_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "switchyard.ops", "batch", "--base-url",
                           stack.url, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_submit_watch_fetch_and_cancel(batch_stack: BatchStack, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"custom_id": f"q{i}", "method": "POST",
                                          "url": "/v1/embeddings",
                                          "body": {"input": f"text {i}"}}) + "\n"
                              for i in range(12)) + "{broken\n")
    submitted = _cli(batch_stack, "submit", str(source), "--endpoint", "/v1/embeddings",
                     "--model", "echo", "--metadata", "run=nightly")
    assert submitted.returncode == 0, submitted.stderr
    batch = json.loads(submitted.stdout)
    assert batch["metadata"] == {"run": "nightly"}
    watched = _cli(batch_stack, "status", batch["id"])
    assert watched.returncode == 0 and json.loads(watched.stdout)["status"] == "completed"
    assert "13/13 (1 failed)" in watched.stderr  # the progress line
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    fetched = _cli(batch_stack, "results", batch["id"], "-o", str(out), "--errors", str(err))
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(json.loads(line)["custom_id"] for line in out.read_text().splitlines()) == \
        sorted(f"q{i}" for i in range(12))
    assert json.loads(err.read_text())["error"]["code"] == "invalid_json_line"

    slow = tmp_path / "slow.jsonl"
    slow.write_text("\n".join(request_line(f"s{i}", "x", model="slow") for i in range(300)))
    long = json.loads(_cli(batch_stack, "submit", str(slow), "--endpoint",
                           "/v1/embeddings").stdout)
    cancelled = _cli(batch_stack, "cancel", long["id"])
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelling"
    assert wait_for(batch_stack.sdk(), long["id"]).status == "cancelled"


def test_without_a_key_the_cli_says_so_in_one_line(batch_stack: BatchStack) -> None:
    refused = _cli(batch_stack, "status", "batch_0", key=None)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [  # the key itself never shows
        "switchyard: error: BatchError: the gateway answered 401: a valid API key is required "
        "(Authorization: Bearer KEY, or x-api-key: KEY)"]
