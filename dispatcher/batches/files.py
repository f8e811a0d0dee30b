"""The file store: batch input files as uploaded, and the output and error files batches
write, in one folder that several gateways and batch workers may share.

    <root>/t-<tenant>/<file id>.jsonl    the content
    <root>/t-<tenant>/<file id>.json     its record, written last: a file exists once it has one

Content is written under a temporary name and renamed into place, so nobody ever reads a
half-written file. An upload is counted as it comes (its bytes, its lines, the tenant's
quota) and refused at the first byte past a limit, never after it was stored. Files
belong to the tenant that made them: another tenant's id is not found. They expire
``retention_s`` after they were made (:meth:`FileStore.sweep` deletes them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from switchyard.broker.config import DEFAULT_TENANT, SwitchyardConfig
from switchyard.broker.keys import TENANT_NAME
from switchyard.broker.locate import DEFAULT_STATE_DIR, STATE_DIR_ENV
from switchyard.dispatcher.batches.errors import FileNotFound, FileRejected

__all__ = ["FileLimits", "FileRecord", "FileStore", "Upload", "new_file_id"]

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
PURPOSES = frozenset({"batch", "batch_output"})


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


@dataclass(frozen=True)
class FileRecord:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    created_at: int
    """Unix seconds."""
    expires_at: int
    created_ms: int = 0
    """The same, in milliseconds: files made within a second are listed in order."""

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> FileRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int
    max_lines: int
    quota_bytes: int
    retention_s: float


class Upload:
    """A file being written: bytes and lines counted as they come; the first write past a
    limit fails (``FileRejected``, ``too_large``) and the partial file is removed."""

    def __init__(self, store: FileStore, tenant: str, filename: str) -> None:
        self._store = store
        self.tenant = tenant
        self.filename = filename
        self.id = new_file_id()
        self._room = min(store.limits.max_bytes, store.limits.quota_bytes - store.used(tenant))
        self._part = store.folder(tenant) / f"{self.id}.part"
        self._out = self._part.open("wb")
        self.bytes = self.lines = 0
        self._last = b"\n"

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.bytes += len(data)
        self.lines += data.count(b"\n")
        self._last = data[-1:]
        limits = self._store.limits
        if self.bytes > self._room:
            self.abort()
            if self.bytes > limits.max_bytes:
                raise FileRejected(f"the file is over {limits.max_bytes} bytes", too_large=True)
            raise FileRejected(f"tenant {self.tenant!r} would store over its quota of "
                               f"{limits.quota_bytes} bytes ([batch] tenant_quota_bytes)",
                               too_large=True)
        if self.lines > limits.max_lines:
            self.abort()
            raise FileRejected(f"the file has over {limits.max_lines} lines ([batch] "
                               "max_lines)", too_large=True)
        self._out.write(data)

    def commit(self, purpose: str) -> FileRecord:
        """Store it (renamed into place, then its record) and return its record."""
        lines = self.lines + (self._last != b"\n")  # a last line without a newline
        if lines > self._store.limits.max_lines:
            self.abort()
            raise FileRejected(f"the file has over {self._store.limits.max_lines} lines "
                               "([batch] max_lines)", too_large=True)
        self._out.close()
        return self._store.place(self._part, self.id, self.tenant, self.filename, purpose,
                                 self.bytes, lines)

    def abort(self) -> None:
        self._out.close()
        self._part.unlink(missing_ok=True)


class FileStore:
    def __init__(self, root: Path, limits: FileLimits,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.limits = limits
        self._clock = clock

    @classmethod
    def for_config(cls, config: SwitchyardConfig, root: Path | None = None) -> FileStore:
        """The store ``[batch]`` describes (``root``: in this folder instead)."""
        batch = config.batch
        state = Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)
        if root is None:
            root = Path(batch.files_dir) if batch.files_dir else state / "files"
        return cls(root, FileLimits(int(batch.max_file_bytes), batch.max_lines,
                                    int(batch.tenant_quota_bytes), batch.file_retention_s))

    def folder(self, tenant: str) -> Path:
        if not TENANT_NAME.match(tenant):
            raise FileNotFound(f"no files for tenant {tenant!r}")
        folder = self.root / f"t-{tenant}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def upload(self, tenant: str | None, filename: str) -> Upload:
        return Upload(self, tenant or DEFAULT_TENANT, filename[:256])

    def place(self, source: Path, file_id: str, tenant: str, filename: str, purpose: str,
              size: int, lines: int) -> FileRecord:
        """Move ``source`` into the store as a new file (its record written last)."""
        if purpose not in PURPOSES:
            source.unlink(missing_ok=True)
            raise FileRejected(f"purpose must be 'batch': {purpose!r}", param="purpose")
        now = self._clock()
        record = FileRecord(file_id, tenant, filename, purpose, size, lines, int(now),
                            int(now + self.limits.retention_s), int(now * 1000))
        folder = self.folder(tenant)
        os.replace(source, folder / f"{file_id}.jsonl")
        staged = folder / f"{file_id}.json.tmp"
        staged.write_text(record.dumps())
        os.replace(staged, folder / f"{file_id}.json")
        return record

    def adopt(self, tenant: str, filename: str, source: Path, file_id: str) -> FileRecord:
        """A batch's output or error file, moved in as ``file_id`` (``batch_output``): what
        accepted work produced is kept whatever the quota, which only refuses uploads."""
        size, lines = source.stat().st_size, 0
        with source.open("rb") as content:
            for block in iter(lambda: content.read(1 << 20), b""):
                lines += block.count(b"\n")
        return self.place(source, file_id, tenant, filename, "batch_output", size, lines)

    def exists(self, tenant: str, file_id: str) -> bool:
        try:
            self.record(tenant, file_id)
        except FileNotFound:
            return False
        return True

    def record(self, tenant: str | None, file_id: str) -> FileRecord:
        """The tenant's file (``FileNotFound`` for another's, an expired one, or none)."""
        tenant = tenant or DEFAULT_TENANT
        if not FILE_ID.match(file_id):
            raise FileNotFound(f"no such file: {file_id!r}")
        try:
            record = FileRecord.loads((self.folder(tenant) / f"{file_id}.json").read_text())
        except (OSError, ValueError, TypeError):
            raise FileNotFound(f"no such file: {file_id!r}") from None
        if record.expires_at <= self._clock():
            raise FileNotFound(f"no such file: {file_id!r} (it expired)")
        return record

    def records(self, tenant: str | None, purpose: str | None = None) -> list[FileRecord]:
        """The tenant's files, oldest first."""
        found = []
        for path in self.folder(tenant or DEFAULT_TENANT).glob("file-*.json"):
            try:
                record = self.record(tenant, path.stem)
            except FileNotFound:
                continue
            if purpose is None or record.purpose == purpose:
                found.append(record)
        return sorted(found, key=lambda r: (r.created_ms, r.id))

    def path(self, record: FileRecord) -> Path:
        return self.folder(record.tenant) / f"{record.id}.jsonl"

    def delete(self, tenant: str | None, file_id: str) -> None:
        record = self.record(tenant, file_id)
        folder = self.folder(record.tenant)
        (folder / f"{record.id}.json").unlink(missing_ok=True)  # gone from here on
        (folder / f"{record.id}.jsonl").unlink(missing_ok=True)

    def used(self, tenant: str) -> int:
        """Bytes the tenant stores now."""
        return sum(r.bytes for r in self.records(tenant))

    def sweep(self) -> int:
        """Delete every expired file (and leftovers of uploads that never finished);
        how many files went."""
        now, gone = self._clock(), 0
        if not self.root.is_dir():
            return 0
        for folder in self.root.glob("t-*"):
            for path in folder.glob("file-*.json"):
                try:
                    expired = FileRecord.loads(path.read_text()).expires_at <= now
                except (OSError, ValueError, TypeError):
                    continue
                if expired:
                    path.unlink(missing_ok=True)
                    path.with_suffix(".jsonl").unlink(missing_ok=True)
                    gone += 1
            for part in folder.glob("file-*.part"):
                if now - part.stat().st_mtime > 86_400:
                    part.unlink(missing_ok=True)
        return gone
