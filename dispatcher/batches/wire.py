"""Files and batches as OpenAI's API shows them (``FileObject``, ``Batch``, list pages),
translated here only."""

from __future__ import annotations

from typing import Any

from switchyard.dispatcher.batches.files import FileRecord
from switchyard.dispatcher.batches.records import STAMPS, BatchState

__all__ = ["batch_object", "file_object", "page"]


def file_object(record: FileRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "file", "bytes": record.bytes,
            "created_at": record.created_at, "expires_at": record.expires_at,
            "filename": record.filename, "purpose": record.purpose, "status": "processed",
            "status_details": None}


def batch_object(state: BatchState) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": state.id, "object": "batch", "endpoint": state.endpoint,
        "errors": {"object": "list", "data": state.errors} if state.errors else None,
        "input_file_id": state.input_file_id,
        "completion_window": state.completion_window, "status": state.status,
        "output_file_id": state.output_file_id, "error_file_id": state.error_file_id,
        "created_at": state.created_at, "expires_at": state.expires_at,
        **{name: state.stamps.get(name) for name in STAMPS},
        "request_counts": {"total": state.total, "completed": state.completed,
                           "failed": state.failed},
        "metadata": state.metadata, "usage": state.usage}
    if state.cost is not None:
        body["cost"] = state.cost
    return body


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": has_more,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None}
