"""A running batch's output and error lines, appended as results come, beside the file
store (``<root>/batches/<batch id>.output.jsonl`` and ``.errors.jsonl``), until the batch
ends and they become its output and error files.

A batch worker that takes up a dead one's batch reads them back: a line cut off by the
kill is dropped, and every ``custom_id`` already written is not sent again, so the
finished files hold each ``custom_id`` once. Lines are buffered and flushed with each
progress report: what a kill loses of them is sent again, and its idempotency key
returns the same job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

__all__ = ["Journal"]


class Journal:
    def __init__(self, folder: Path, batch_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.output_path = folder / f"{batch_id}.output.jsonl"
        self.errors_path = folder / f"{batch_id}.errors.jsonl"
        self.costs_path = folder / f"{batch_id}.costs.jsonl"
        """What each answered line cost (``cost_usd``), when it cost anything."""
        self.completed = 0
        self.failed = 0
        self.done: set[str] = set()
        """``custom_id`` of every line written."""
        self.written_unnamed = 0
        """Error lines of lines that had no ``custom_id``."""
        self.input_tokens = self.output_tokens = 0
        """Summed over the output lines' responses (their bodies' ``usage``)."""
        self._open: dict[Path, IO[str]] = {}

    def resume(self) -> None:
        """Read back what an earlier run wrote (a cut-off last line is dropped)."""
        self.completed = self._read(self.output_path)
        self.failed = self._read(self.errors_path)

    def reset(self) -> None:
        self.close()
        for path in (self.output_path, self.errors_path, self.costs_path):
            path.unlink(missing_ok=True)
        self.completed = self.failed = self.written_unnamed = 0
        self.input_tokens = self.output_tokens = 0
        self.done.clear()

    def _read(self, path: Path) -> int:
        if not path.exists():
            return 0
        data = path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) != len(data):
            with path.open("r+b") as out:
                out.truncate(len(whole))
        count = 0
        for raw in whole.splitlines():
            item = json.loads(raw)
            custom_id = item.get("custom_id")
            if path == self.output_path:
                self._count(item["response"]["body"].get("usage") or {})
            if custom_id is None:
                self.written_unnamed += 1
            else:
                self.done.add(custom_id)
            count += 1
        return count

    def _count(self, usage: dict[str, int]) -> None:
        self.input_tokens += int(usage.get("prompt_tokens", 0))
        self.output_tokens += int(usage.get("completion_tokens", 0))

    def output(self, custom_id: str, line: str, usage: dict[str, int],
               cost_usd: float = 0.0) -> None:
        """A line's answer (``usage``: its response body's)."""
        self._append(self.output_path, line)
        self._count(usage)
        if cost_usd:
            self._append(self.costs_path, json.dumps({"custom_id": custom_id,
                                                      "usd": cost_usd}))
        self.done.add(custom_id)
        self.completed += 1

    def error(self, custom_id: str | None, line: str) -> None:
        self._append(self.errors_path, line)
        if custom_id is None:
            self.written_unnamed += 1
        else:
            self.done.add(custom_id)
        self.failed += 1

    def _append(self, path: Path, line: str) -> None:
        out = self._open.get(path)
        if out is None:
            out = self._open[path] = path.open("a", encoding="utf-8")
        out.write(line + "\n")

    def cost_usd(self) -> float:
        """What the answered lines cost, each counted once (a line answered again after a
        take-up is the same job: the same cost)."""
        if not self.costs_path.exists():
            return 0.0
        costs: dict[str, float] = {}
        for raw in self.costs_path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(raw)
            except ValueError:  # (a line cut by a kill)
                continue
            costs[item["custom_id"]] = float(item["usd"])
        return sum(costs.values())

    def flush(self) -> None:
        for out in self._open.values():
            out.flush()

    def close(self) -> None:
        for out in self._open.values():
            out.close()
        self._open.clear()
