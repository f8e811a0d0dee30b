"""A batch whose window closes first (issue 18, a short ``[batch] window_s``): it ends
``expired``, with what finished in its output and every other line ``batch_expired``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchyard.broker.config import load_config
from switchyard.ops.processes import BatchWorkerProcess, GatewayProcess, WorkerProcess
from switchyard.ops.redis_server import RedisServer
from tests.dispatcher.batches.conftest import (
    BatchStack,
    lines_of,
    request_line,
    submit,
    wait_for,
    write_config,
)


@pytest.fixture(scope="module")
def short_window(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[BatchStack]:
    folder = tmp_path_factory.mktemp("window")
    path = write_config(folder, window_s=3)
    config = load_config(path, environ={})
    url = redis_server.url
    with WorkerProcess("slow", url, path, config), GatewayProcess(url, path) as gateway, \
            BatchWorkerProcess(url, path) as batch_worker:
        yield BatchStack(gateway.url, url, config, path, folder, batch_worker, "")


def test_a_window_that_closes_ends_the_batch_expired_with_its_finished_lines(
        short_window: BatchStack) -> None:
    client = short_window.sdk()
    ids = [f"w{i}" for i in range(1_000)]  # about 100 lines a second: 10 s of work
    batch = submit(client, [request_line(cid, cid, model="slow") for cid in ids])
    done = wait_for(client, batch.id, timeout_s=30)
    assert done.status == "expired" and done.expired_at
    finished = [line["custom_id"] for line in lines_of(client, done.output_file_id)]
    expired = lines_of(client, done.error_file_id)
    assert 0 < len(finished) < len(ids)
    assert {line["error"]["code"] for line in expired} == {"batch_expired"}
    assert sorted(finished + [line["custom_id"] for line in expired]) == sorted(ids)
    assert (done.request_counts.completed, done.request_counts.failed) == (  # type: ignore[union-attr]
        len(finished), len(expired))
