"""The OpenAI Batch API through the official SDK (issue 18): files, batches, line-level
errors, cancel, tenants kept apart, upload limits; against a real gateway, echo workers
and a batch worker."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.dispatcher.batches.conftest import (
    BatchStack,
    lines_of,
    request_line,
    submit,
    wait_for,
)
from tests.dispatcher.gateway.conftest import KEY_ALPHA, KEY_BETA


def test_a_batch_answers_every_line_once_as_its_request_alone_would(
        batch_stack: BatchStack) -> None:
    client = batch_stack.sdk()
    texts = {f"r{i}": f"text number {i}" for i in range(40)}
    batch = submit(client, [request_line(cid, text) for cid, text in texts.items()])
    assert batch.status == "validating" and batch.endpoint == "/v1/embeddings"
    done = wait_for(client, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (40, 40, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.error_file_id is None
    output = lines_of(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(texts)
    with httpx.Client(base_url=batch_stack.url,
                      headers={"authorization": f"Bearer {KEY_ALPHA}"}) as http:
        for line in output[:5]:  # the same request on its own: the same body
            alone = http.post("/v1/embeddings", json={
                "model": "echo", "input": texts[line["custom_id"]]}).json()
            assert line["response"]["status_code"] == 200 and line["error"] is None
            assert line["response"]["body"] == alone
    assert done.usage is not None and done.usage.input_tokens == sum(
        len(t.split()) for t in texts.values())
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_a_chat_batch_answers_as_chat_completions(batch_stack: BatchStack) -> None:
    client = batch_stack.sdk()
    lines = [request_line(f"c{i}", f"say {i}", "echo-chat", "/v1/chat/completions")
             for i in range(10)]
    done = wait_for(client, submit(client, lines, "/v1/chat/completions").id)
    assert done.status == "completed"
    alone = client.chat.completions.create(model="echo-chat",
                                           messages=[{"role": "user", "content": "say 3"}])
    by_id = {line["custom_id"]: line["response"]["body"]
             for line in lines_of(client, done.output_file_id)}
    body = by_id["c3"]
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert (choice["message"]["role"], choice["message"]["content"], choice["finish_reason"]) \
        == ("assistant", alone.choices[0].message.content, alone.choices[0].finish_reason)
    assert body["usage"]["completion_tokens"] == alone.usage.completion_tokens  # type: ignore[union-attr]


def test_bad_lines_fail_alone_and_the_rest_run(batch_stack: BatchStack) -> None:
    client = batch_stack.sdk()
    lines = [request_line("ok-1", "fine"), "{not json", request_line("ok-1", "again"),
             request_line("lost", "x", model="no-such-model"),
             json.dumps({"custom_id": "bare", "method": "POST", "url": "/v1/embeddings"}),
             json.dumps({"custom_id": "wrong", "method": "POST",
                         "url": "/v1/embeddings", "body": {"model": "echo", "input": 5}}),
             request_line("ok-2", "fine too")]
    done = wait_for(client, submit(client, lines).id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (7, 2, 5)
    assert {line["custom_id"] for line in lines_of(client, done.output_file_id)} == {
        "ok-1", "ok-2"}
    errors = {(e["custom_id"], (e["error"] or {}).get("code")
               or e["response"]["body"]["error"]["code"]): e
              for e in lines_of(client, done.error_file_id)}
    assert set(errors) == {(None, "invalid_json_line"), ("ok-1", "duplicate_custom_id"),
                           ("lost", "model_not_found"), ("bare", "missing_required_parameter"),
                           ("wrong", None)}
    assert errors["lost", "model_not_found"]["response"]["status_code"] == 404
    assert errors["wrong", None]["response"]["status_code"] == 400


def test_a_file_of_no_requests_fails_the_batch(batch_stack: BatchStack) -> None:
    client = batch_stack.sdk()
    done = wait_for(client, submit(client, ["nope", "{}"]).id)
    assert done.status == "failed" and done.failed_at
    assert done.errors is not None and [e.line for e in done.errors.data or []] == [1, 2]


def test_cancel_mid_batch_ends_cancelled_with_what_finished(batch_stack: BatchStack) -> None:
    client = batch_stack.sdk()
    batch = submit(client, [request_line(f"s{i}", f"t{i}", model="slow") for i in range(400)])
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).request_counts.completed < 20:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = wait_for(client, batch.id)
    assert done.status == "cancelled" and done.cancelling_at and done.cancelled_at
    finished = [line["custom_id"] for line in lines_of(client, done.output_file_id)]
    cancelled = [line["custom_id"] for line in lines_of(client, done.error_file_id)]
    assert 20 <= len(finished) < 400 and len(set(finished)) == len(finished)
    assert not set(finished) & set(cancelled)
    assert {line["error"]["code"] for line in lines_of(client, done.error_file_id)} <= {
        "batch_cancelled"}
    assert done.request_counts.completed == len(finished)  # type: ignore[union-attr]
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_tenants_never_see_each_others_files_or_batches(batch_stack: BatchStack) -> None:
    alpha, beta = batch_stack.sdk(KEY_ALPHA), batch_stack.sdk(KEY_BETA)
    batch = submit(alpha, [request_line("a", "mine")])
    for call in (lambda: beta.files.retrieve(batch.input_file_id),
                 lambda: beta.files.content(batch.input_file_id),
                 lambda: beta.files.delete(batch.input_file_id),
                 lambda: beta.batches.retrieve(batch.id),
                 lambda: beta.batches.cancel(batch.id),
                 lambda: beta.batches.create(input_file_id=batch.input_file_id,
                                             endpoint="/v1/embeddings",
                                             completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    for odd in ("batch_x}:y{z", "../batch", "batch_" + "0" * 24):
        with pytest.raises(openai.NotFoundError):
            alpha.batches.retrieve(odd)
    assert batch.id not in [b.id for b in beta.batches.list()]
    assert batch.input_file_id not in [f.id for f in beta.files.list()]
    assert batch.id in [b.id for b in alpha.batches.list()]
    assert wait_for(alpha, batch.id).status == "completed"


def test_files_list_fetch_and_delete(batch_stack: BatchStack) -> None:
    client = batch_stack.sdk(KEY_BETA)
    made = [client.files.create(file=(f"f{i}.jsonl", b"{}\n"), purpose="batch")
            for i in range(3)]
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == [made[2].id, made[1].id]  # newest first
    assert page.has_more
    assert [f.id for f in client.files.list(order="asc", after=made[0].id).data][:2] == [
        made[1].id, made[2].id]
    assert client.files.content(made[0].id).content == b"{}\n"
    assert client.files.delete(made[0].id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made[0].id)


@pytest.mark.parametrize(("content", "why"), [
    (b"x" * 400_001, "bytes"), (b"{}\n" * 2_001, "lines")])
def test_an_upload_over_the_limits_is_refused(batch_stack: BatchStack, content: bytes,
                                              why: str) -> None:
    client = batch_stack.sdk(KEY_BETA)
    before = len(client.files.list().data)
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", content), purpose="batch")
    assert refused.value.status_code == 413 and why in str(refused.value)
    assert len(client.files.list().data) == before
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")


def test_a_batch_reports_its_device_cost_beside_a_list_price(batch_stack: BatchStack) -> None:
    """The slow pool costs 3.6 USD an hour (0.001 a second) and runs 4 lines in 40 ms: 40
    lines are about 10 x 40 ms of device time, 0.0004 USD; at the configured list price
    (0.5 USD per million input tokens) their 80 tokens cost 0.00004 USD."""
    client = batch_stack.sdk()
    done = wait_for(client, submit(client, [request_line(f"p{i}", f"two words{i}",
                                                         model="slow")
                                            for i in range(40)]).id)
    cost = (done.model_extra or {})["cost"]
    assert 0.0004 <= cost["usd"] <= 0.0008
    assert cost["list_price_usd"] == pytest.approx(80 * 0.5 / 1e6)
