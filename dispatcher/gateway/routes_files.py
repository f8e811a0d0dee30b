"""``/v1/files``: upload (multipart: ``file`` and ``purpose=batch``), list, retrieve,
download and delete a tenant's files. An upload streams into the file store as it comes:
its size, lines and the tenant's quota are enforced on the way, so a file over a limit is
refused at the first byte past it (413), never stored first."""

from __future__ import annotations

from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from switchyard.dispatcher.batches import wire
from switchyard.dispatcher.batches.errors import FileRejected
from switchyard.dispatcher.batches.files import Upload
from switchyard.dispatcher.gateway.errors import BadRequest
from switchyard.dispatcher.gateway.state import gateway_of

__all__ = ["list_params", "routes"]

FIELD_LIMIT = 1024
"""Bytes of a form field other than the file (``purpose``, ``expires_after[...]``)."""


class _Form:
    """A multipart body read as it streams: the ``file`` part into an upload, the other
    fields kept (small)."""

    def __init__(self, start: Any) -> None:
        self._start = start
        self.upload: Upload | None = None
        self.fields: dict[str, bytes] = {}
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._name = ""

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data}

    def _begin(self) -> None:
        self._headers, self._field, self._value, self._name = {}, b"", b"", ""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.upload is not None:
                raise BadRequest("one file a request", "file")
            filename = options.get(b"filename", b"upload.jsonl").decode("utf-8", "replace")
            self.upload = self._start(filename)
        else:
            self.fields[self._name] = b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._name == "file":
            assert self.upload is not None
            self.upload.write(data[start:end])
            return
        value = self.fields.get(self._name, b"") + data[start:end]
        if len(value) > FIELD_LIMIT:
            raise BadRequest(f"form field {self._name!r} is too long", self._name)
        self.fields[self._name] = value


async def create_file(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise BadRequest("upload a file as multipart/form-data (fields: file, purpose)")
    form = _Form(lambda filename: gw.files.upload(tenant, filename))
    parser = MultipartParser(options[b"boundary"], form.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException:
        if form.upload is not None:
            form.upload.abort()
        raise
    if form.upload is None:
        raise BadRequest("the file field is missing", "file")
    purpose = form.fields.get("purpose", b"").decode("utf-8", "replace")
    if purpose != "batch":
        form.upload.abort()
        raise FileRejected(f"purpose must be 'batch': {purpose!r}", param="purpose")
    record = form.upload.commit(purpose)
    return JSONResponse(wire.file_object(record))


def list_params(request: Request) -> tuple[str | None, int, bool]:
    """``after``, ``limit`` (1-100; default 20) and ``order`` (``asc``, or ``desc``: the
    default) of a list call."""
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequest(f"limit must be an integer from 1 to 100: {raw!r}", "limit")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be asc or desc: {order!r}", "order")
    return request.query_params.get("after"), int(raw), order == "desc"


async def list_files(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    after, limit, newest_first = list_params(request)
    records = gw.files.records(tenant, request.query_params.get("purpose"))
    if newest_first:
        records.reverse()
    if after is not None:
        ids = [r.id for r in records]
        records = records[ids.index(after) + 1:] if after in ids else []
    shown = records[:limit]
    return JSONResponse(wire.page([wire.file_object(r) for r in shown], len(records) > limit))


async def retrieve_file(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    return JSONResponse(wire.file_object(gw.files.record(tenant, request.path_params["id"])))


async def file_content(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    record = gw.files.record(tenant, request.path_params["id"])
    return FileResponse(gw.files.path(record), media_type="application/jsonl",
                        filename=record.filename)


async def delete_file(request: Request) -> Response:
    gw = gateway_of(request)
    tenant = await gw.tenant(request)
    gw.files.delete(tenant, request.path_params["id"])
    return JSONResponse({"id": request.path_params["id"], "object": "file", "deleted": True})


routes = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{id}/content", file_content, methods=["GET"]),
]
