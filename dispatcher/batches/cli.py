"""`switchyard batch-worker` (run batches: an rq worker) and `switchyard batch ...` (submit,
watch, fetch and cancel batches through a gateway, as any OpenAI client would).

The batch commands take the gateway's address from ``--base-url`` (else
``$SWITCHYARD_BASE_URL``, else the local default) and the API key from
``$SWITCHYARD_API_KEY`` only (never a flag: it would show in the process list).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from switchyard.broker import logs
from switchyard.dispatcher.batches.errors import BatchError

__all__ = ["add_parser"]

BASE_URL_ENV = "SWITCHYARD_BASE_URL"
API_KEY_ENV = "SWITCHYARD_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
ENDED = ("completed", "failed", "expired", "cancelled")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser("batch-worker", help="run batches (an rq worker on [batch] queue)")
    w.add_argument("--config", help="TOML config file (default: $SWITCHYARD_CONFIG, builtin)")
    w.add_argument("--redis-url", help="overrides [redis] url")
    w.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    logs.add_argument(w)
    w.set_defaults(handler=_worker)
    b = sub.add_parser("batch", help="submit, watch, fetch and cancel batches (via a gateway)")
    b.add_argument("--base-url", help=f"the gateway (default: ${BASE_URL_ENV}, else "
                                      f"{DEFAULT_BASE_URL}); the key: ${API_KEY_ENV}")
    actions = b.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = actions.add_parser("submit", help="upload FILE (JSONL) and start a batch on it")
    submit.add_argument("file", type=Path)
    submit.add_argument("--endpoint", required=True,
                        choices=["/v1/chat/completions", "/v1/embeddings"])
    submit.add_argument("--model", help="the model of lines whose body names none")
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    status = actions.add_parser("status", help="a batch's progress (live until it ends)")
    status.add_argument("id")
    status.add_argument("--once", action="store_true", help="print it once and return")
    results = actions.add_parser("results", help="write a finished batch's output")
    results.add_argument("id")
    results.add_argument("-o", "--output", type=Path, required=True)
    results.add_argument("--errors", type=Path, help="also write its error file here")
    cancel = actions.add_parser("cancel", help="cancel a batch")
    cancel.add_argument("id")
    b.set_defaults(handler=_batch)


def _worker(ns: argparse.Namespace) -> int:
    from switchyard.dispatcher.batches.worker import serve

    logs.configure(ns.log_format)
    return serve(ns.config, ns.redis_url, ns.burst)


def _batch(ns: argparse.Namespace) -> int:
    base = (ns.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    key = os.environ.get(API_KEY_ENV, "")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=f"{base}/v1", headers=headers, timeout=60.0) as http:
            if ns.action == "submit":
                print(json.dumps(_submit(http, ns)))
            elif ns.action == "status":
                _status(http, ns.id, ns.once)
            elif ns.action == "results":
                _results(http, ns.id, ns.output, ns.errors)
            else:
                print(json.dumps(_call(http, "POST", f"/batches/{ns.id}/cancel")))
    except httpx.HTTPError as exc:
        raise BatchError(f"cannot reach the gateway at {base}: {exc}") from None
    return 0


def _call(http: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    response = http.request(method, path, **kw)
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise BatchError(f"the gateway answered {response.status_code}: {message}")
    return response.json()


def _submit(http: httpx.Client, ns: argparse.Namespace) -> Any:
    metadata = dict(item.partition("=")[::2] for item in ns.metadata)
    source = _with_model(ns.file, ns.model) if ns.model else ns.file
    try:
        with source.open("rb") as content:
            uploaded = _call(http, "POST", "/files", data={"purpose": "batch"},
                             files={"file": (ns.file.name, content)})
    finally:
        if source != ns.file:
            source.unlink(missing_ok=True)
    return _call(http, "POST", "/batches", json={
        "input_file_id": uploaded["id"], "endpoint": ns.endpoint, "completion_window": "24h",
        "metadata": metadata or None})


def _with_model(path: Path, model: str) -> Path:
    """A copy of the file whose lines name ``model`` where their body names none."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as out, \
            path.open(encoding="utf-8") as lines:
        for raw in lines:
            try:
                item = json.loads(raw)
                if isinstance(item, dict) and isinstance(item.get("body"), dict):
                    item["body"].setdefault("model", model)
                    raw = json.dumps(item) + "\n"
            except ValueError:
                pass  # (its error comes from the batch, line by line)
            out.write(raw)
    return Path(out.name)


def _status(http: httpx.Client, batch_id: str, once: bool) -> None:
    started, first = time.monotonic(), None
    live = sys.stderr.isatty()
    while True:
        batch = _call(http, "GET", f"/batches/{batch_id}")
        counts = batch.get("request_counts") or {}
        done = counts.get("completed", 0) + counts.get("failed", 0)
        total = counts.get("total", 0)
        first = done if first is None else first
        rate = (done - first) / max(1e-9, time.monotonic() - started)
        print(_progress(batch["status"], done, total, counts.get("failed", 0), rate),
              end="\r" if live and not once else "\n", file=sys.stderr, flush=True)
        if once or batch["status"] in ENDED:
            if live and not once:
                print(file=sys.stderr)
            print(json.dumps(batch))
            return
        time.sleep(1.0)


def _progress(status: str, done: int, total: int, failed: int, rate: float) -> str:
    width = 30
    filled = int(width * done / total) if total else 0
    eta = f"{(total - done) / rate:.0f}s" if rate > 0 and total else "?"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({failed} failed) "
            f"{status}, {rate:.1f} lines/s, eta {eta}   ")


def _results(http: httpx.Client, batch_id: str, output: Path, errors: Path | None) -> None:
    batch = _call(http, "GET", f"/batches/{batch_id}")
    if batch["status"] not in ENDED:
        raise BatchError(f"batch {batch_id} is {batch['status']}: no output yet")
    for file_id, path in ((batch.get("output_file_id"), output),
                          (batch.get("error_file_id"), errors)):
        if path is None:
            continue
        if not file_id:
            path.write_bytes(b"")
            continue
        with http.stream("GET", f"/files/{file_id}/content") as response, path.open("wb") as out:
            if response.status_code >= 400:
                raise BatchError(f"the gateway answered {response.status_code} for "
                                      f"file {file_id}")
            for chunk in response.iter_bytes():
                out.write(chunk)
    print(json.dumps({"id": batch_id, "status": batch["status"], "output": str(output),
                      "errors": str(errors) if errors else None}))
