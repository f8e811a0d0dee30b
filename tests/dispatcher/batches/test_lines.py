"""Reading a batch's input (issue 18): each line is a request, or an error of its own."""

from __future__ import annotations

import json
from pathlib import Path

from switchyard.dispatcher.batches.lines import Line, Refused, error_line, read_lines


def _read(tmp_path: Path, *lines: str) -> list[Line | Refused]:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return list(read_lines(path, "/v1/embeddings"))


def _req(custom_id: object, **over: object) -> str:
    item = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "echo", "input": "x"}, **over}
    return json.dumps({k: v for k, v in item.items() if v is not None})


def test_each_line_is_a_request_or_its_own_error(tmp_path: Path) -> None:
    found = _read(tmp_path, _req("a"), "{not json", "[1, 2]", _req(7), _req("b", method="GET"),
                  _req("c", url="/v1/chat/completions"), _req("d", body="text"),
                  _req("a"), "", _req("e", body=None), _req("f"))
    kinds = [(x.number, x.custom_id, x.code if isinstance(x, Refused) else "ok")
             for x in found]
    assert kinds == [
        (1, "a", "ok"), (2, None, "invalid_json_line"), (3, None, "invalid_json_line"),
        (4, None, "missing_required_parameter"), (5, "b", "invalid_method"),
        (6, "c", "invalid_url"), (7, "d", "invalid_request"), (8, "a", "duplicate_custom_id"),
        (10, "e", "missing_required_parameter"), (11, "f", "ok")]


def test_an_error_line_has_openais_shape(tmp_path: Path) -> None:
    line = json.loads(error_line("a", "batch_expired", "too late"))
    assert line["id"].startswith("batch_req_")
    assert (line["custom_id"], line["response"], line["error"]) == (
        "a", None, {"code": "batch_expired", "message": "too late"})
