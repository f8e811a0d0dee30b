"""What the gateway promises beyond the wire formats, against a real gateway process:
jobs over HTTP, one tenant never reaching another's jobs, run-time keys that stop working
once revoked, streams that cancel their job when the caller goes and end with an error
event (never ``[DONE]``) when the job fails, keepalives while a job waits, and no start
without keys."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from switchyard.broker.errors import SwitchyardError
from switchyard.ops.processes import GatewayProcess
from tests.dispatcher.gateway.conftest import KEY_ALPHA, KEY_BETA, Stack

HELLO = [{"role": "user", "content": "hello there, gateway"}]


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def submit_async(stack: Stack, model: str, key: str = KEY_ALPHA) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", json={"model": model,
                      "messages": HELLO}, headers={**auth(key), "prefer": "respond-async"})


def wait_for_state(stack: Stack, job_id: str, state: str,
                   key: str = KEY_ALPHA) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while True:
        view = httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=auth(key)).json()
        if view["status"] == state or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def test_respond_async_then_the_job_over_http(stack: Stack) -> None:
    accepted = submit_async(stack, "echo-chat")
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    assert accepted.headers["location"] == f"/v1/jobs/{job_id}"
    assert accepted.headers["x-request-id"] == job_id
    view = wait_for_state(stack, job_id, "succeeded")
    assert view["status"] == "succeeded"
    assert view["result"]["text"] == "hello there, gateway"  # type: ignore[index]
    events = httpx.get(f"{stack.url}/v1/jobs/{job_id}/events", headers=auth(KEY_ALPHA)).text
    assert "event: outcome" in events and "id: outcome" in events


def test_a_tenant_cannot_read_or_cancel_another_tenants_job(stack: Stack) -> None:
    job_id = submit_async(stack, "parked").json()["id"]  # no worker: it stays queued
    for method in ("GET", "DELETE"):
        other = httpx.request(method, f"{stack.url}/v1/jobs/{job_id}", headers=auth(KEY_BETA))
        assert other.status_code == 404, method
    events = httpx.get(f"{stack.url}/v1/jobs/{job_id}/events", headers=auth(KEY_BETA))
    assert events.status_code == 404
    assert wait_for_state(stack, job_id, "queued")["status"] == "queued"  # untouched
    mine = httpx.delete(f"{stack.url}/v1/jobs/{job_id}", headers=auth(KEY_ALPHA)).json()
    assert mine["cancelled"] is True and mine["status"] == "cancelled"
    nonsense = httpx.get(f"{stack.url}/v1/jobs/not-a-job-id", headers=auth(KEY_ALPHA))
    assert nonsense.status_code == 404


def _keys(stack: Stack, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "switchyard.ops", "keys", *args, "--config",
                          str(stack.config_path), "--redis-url", stack.redis_url, "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def test_a_revoked_key_stops_working_within_the_cache_period(stack: Stack) -> None:
    made = json.loads(_keys(stack, "create", "--tenant", "delta", "--expires", "1h"))
    key, key_id = made["key"], made["id"]
    assert key not in _keys(stack, "list") and key_id in _keys(stack, "list")
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(model="echo-chat", messages=HELLO).choices
    _keys(stack, "revoke", key_id)
    revoked_at = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        while True:  # accepted from the cache for at most key_cache_s (0.5 s)
            client.models.list()
            time.sleep(0.05)
    assert time.monotonic() - revoked_at < stack.config.gateway.key_cache_s + 1.0


def test_run_time_tenants_get_the_default_quota_each_as_their_own(stack: Stack) -> None:
    """[tenants.default] holds 2 requests a bucket: each run-time tenant has its own two
    (not one bucket shared by every unconfigured name)."""
    for tenant in ("epsilon", "zeta"):
        key = json.loads(_keys(stack, "create", "--tenant", tenant))["key"]
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)
        for _ in range(2):
            client.chat.completions.create(model="echo-chat", messages=HELLO)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="echo-chat", messages=HELLO)
        assert stack.metric("switchyard_gateway_requests_total", route="/v1/chat/completions",
                            status="200", tenant=tenant) == 2


def _stream_lines(stack: Stack, body: dict[str, object], headers: dict[str, str] | None = None
                  ) -> list[str]:
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                      headers={**auth(KEY_ALPHA), **(headers or {})}) as response:
        assert response.status_code == 200
        return list(response.iter_lines())


def test_a_failing_stream_ends_with_an_error_not_done(stack: Stack) -> None:
    """A job that waits past its deadline (no worker) fails after its stream began."""
    lines = _stream_lines(stack, {"model": "parked", "messages": HELLO, "stream": True},
                          {"x-switchyard-deadline": "1"})
    data = [line for line in lines if line.startswith("data: ")]
    assert "data: [DONE]" not in data
    last = json.loads(data[-1].removeprefix("data: "))
    assert last["error"]["code"] == "job_expired"
    assert ": keepalive" in lines  # while it waited (keepalive_s = 0.3)
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY_ALPHA, max_retries=0)
    with pytest.raises(openai.APIError, match="deadline"):
        for _ in client.chat.completions.create(
                model="parked", messages=HELLO, stream=True,
                extra_headers={"x-switchyard-deadline": "1"}):
            pass


def test_a_disconnected_stream_cancels_its_job(stack: Stack) -> None:
    before = stack.metric("switchyard_gateway_abandoned_total", route="/v1/chat/completions")
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers=auth(KEY_ALPHA),
                      json={"model": "parked", "messages": HELLO, "stream": True}) as response:
        job_id = response.headers["x-request-id"]
        next(response.iter_lines())  # the first chunk (the role), then the caller goes
    assert wait_for_state(stack, job_id, "cancelled")["status"] == "cancelled"
    assert stack.metric("switchyard_gateway_abandoned_total",
                        route="/v1/chat/completions") == before + 1


def test_a_caller_that_goes_away_cancels_its_waiting_job(stack: Stack) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{stack.url}/v1/chat/completions", headers=auth(KEY_ALPHA), timeout=0.5,
                   json={"model": "parked", "messages": [{"role": "user", "content": "bye"}]})
    deadline = time.monotonic() + 10
    cancelled = 0.0
    while time.monotonic() < deadline and not cancelled:
        cancelled = stack.metric("switchyard_gateway_requests_total",
                                 route="/v1/chat/completions", status="499", tenant="alpha")
        time.sleep(0.05)
    assert cancelled >= 1


def test_the_gateway_refuses_to_start_without_keys(stack: Stack, tmp_path: Path) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[redis]\nprefix = "bare{time.time_ns() % 10**6}"\n')
    with pytest.raises(SwitchyardError, match="did not start"):
        GatewayProcess(stack.redis_url, bare).start(timeout_s=30)
    assert "no API keys" in next(tmp_path.glob("gateway-*.log")).read_text()
    bare.write_text(bare.read_text() + '[gateway]\nauth = "none"\n')
    with GatewayProcess(stack.redis_url, bare) as open_gateway:
        models = httpx.get(f"{open_gateway.url}/v1/models")
        assert models.status_code == 200


def test_a_gateway_with_json_logs_writes_a_json_line_per_request(
    stack: Stack, tmp_path: Path
) -> None:
    """Its request line carries the job id and tenant as fields (what a log search joins
    on), and the key appears nowhere in the log."""
    log = tmp_path / "gateway.log"
    with GatewayProcess(stack.redis_url, stack.config_path, log=log,
                        env={"SWITCHYARD_LOG_FORMAT": "json"}) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY_ALPHA)
        client.embeddings.create(model="echo", input="hi")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    request = next(line for line in lines if line.get("job_id"))
    assert request["tenant"] == "alpha" and request["outcome"] == 200
    assert request["job_id"].startswith("echo.") and "total_ms" in request["timings"]
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # its own lines too
    assert KEY_ALPHA not in log.read_text()
