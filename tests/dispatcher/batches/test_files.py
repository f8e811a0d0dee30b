"""The file store (issue 18): limits enforced while an upload streams, a tenant's quota,
tenants kept apart, expiry."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.dispatcher.batches.errors import FileNotFound, FileRejected
from switchyard.dispatcher.batches.files import FileLimits, FileStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _store(tmp_path: Path, clock: Clock | None = None, **limits: float) -> FileStore:
    settings = {"max_bytes": 1_000, "max_lines": 5, "quota_bytes": 2_500,
                "retention_s": 3_600.0, **limits}
    return FileStore(tmp_path / "files", FileLimits(**settings),  # type: ignore[arg-type]
                     clock or Clock())


def _upload(store: FileStore, tenant: str, chunks: list[bytes], name: str = "in.jsonl") -> str:
    upload = store.upload(tenant, name)
    for chunk in chunks:
        upload.write(chunk)
    return upload.commit("batch").id


def test_an_upload_is_stored_whole_and_counted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    file_id = _upload(store, "alpha", [b'{"a": 1}\n{"b"', b': 2}'])
    record = store.record("alpha", file_id)
    assert (record.bytes, record.lines, record.purpose, record.filename) == (
        17, 2, "batch", "in.jsonl")
    assert store.path(record).read_bytes() == b'{"a": 1}\n{"b": 2}'
    assert [r.id for r in store.records("alpha")] == [file_id]


@pytest.mark.parametrize(("chunks", "why"), [
    ([b"x" * 600, b"y" * 600], "over 1000 bytes"),
    ([b"a\n" * 4, b"b\n" * 4], "over 5 lines"),
    ([b"a\n" * 5 + b"tail without a newline"], "over 5 lines"),
])
def test_a_file_over_a_limit_is_refused_and_nothing_stays(
        tmp_path: Path, chunks: list[bytes], why: str) -> None:
    store = _store(tmp_path)
    upload = store.upload("alpha", "big.jsonl")
    with pytest.raises(FileRejected, match=why) as refused:
        for chunk in chunks:
            upload.write(chunk)
        upload.commit("batch")
    assert refused.value.too_large
    assert list((tmp_path / "files" / "t-alpha").iterdir()) == []


def test_the_first_byte_past_the_limit_is_refused_before_it_is_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    upload = store.upload("alpha", "big.jsonl")
    upload.write(b"x" * 1_000)
    with pytest.raises(FileRejected):
        upload.write(b"y")
    assert not any((tmp_path / "files" / "t-alpha").iterdir())


def test_a_tenants_quota_counts_what_it_stores(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _upload(store, "alpha", [b"x" * 1_000])
    second = _upload(store, "alpha", [b"x" * 1_000])
    with pytest.raises(FileRejected, match="quota"):
        _upload(store, "alpha", [b"x" * 600])
    _upload(store, "beta", [b"x" * 1_000])  # another tenant's quota is its own
    store.delete("alpha", second)
    _upload(store, "alpha", [b"x" * 600])  # room again


def test_tenants_do_not_see_each_others_files(tmp_path: Path) -> None:
    store = _store(tmp_path)
    file_id = _upload(store, "alpha", [b"{}\n"])
    with pytest.raises(FileNotFound):
        store.record("beta", file_id)
    with pytest.raises(FileNotFound):
        store.delete("beta", file_id)
    assert store.records("beta") == []
    assert store.record("alpha", file_id).id == file_id


def test_files_expire_after_their_retention(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    file_id = _upload(store, "alpha", [b"{}\n"])
    clock.now += 3_599
    assert store.record("alpha", file_id).expires_at == int(clock.now) + 1
    clock.now += 1
    with pytest.raises(FileNotFound, match="expired"):
        store.record("alpha", file_id)
    assert store.records("alpha") == []
    assert store.sweep() == 1
    assert list((tmp_path / "files" / "t-alpha").iterdir()) == []


@pytest.mark.parametrize("bad", ["file-../../etc", "../file-0", "file-ABC", ""])
def test_ids_that_are_not_file_ids_are_not_found(tmp_path: Path, bad: str) -> None:
    with pytest.raises(FileNotFound):
        _store(tmp_path).record("alpha", bad)
