"""The provider bridge against real local fake providers (HTTP servers answering like
OpenAI and Anthropic, faults on demand), a real Redis and an in-process bridge worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys, SwitchyardConfig
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.ops.fake_provider import FakeProfile, FakeProvider
from switchyard.workers import build_engine
from switchyard.workers.engines.bridge import BridgeEngine
from tests.conftest import StartWorker

pytestmark = pytest.mark.cluster

USER = [{"role": "user", "content": "tell me about queues"}]


@pytest.fixture
def fakes() -> Iterator[list[FakeProvider]]:
    started = [FakeProvider(FakeProfile(latency_ms=5)).start() for _ in range(3)]
    yield started
    for fake in started:
        fake.stop()


def _config(prefix: str, fakes: list[FakeProvider], *, kinds: tuple[str, ...] = ("openai",) * 2,
            **bridge: Any) -> SwitchyardConfig:
    providers = {f"p{i}": {"kind": kind, "base_url": fake.url, "api_key_env": f"SY_TEST_KEY_{i}"}
                 for i, (kind, fake) in enumerate(zip(kinds, fakes, strict=False))}
    targets = [{"provider": name, "model": f"m-{name}", "price_in": 1.0, "price_out": 2.0,
                "timeout_s": 5, "first_token_timeout_s": 2} for name in providers]
    return SwitchyardConfig.model_validate({
        "redis": {"prefix": prefix},
        "worker": {"block_ms": 50, "heartbeat_s": 0.2, "heartbeat_ttl_s": 2},
        "providers": providers,
        "pools": {"cloud": {"engine": "bridge", "max_batch": 16, "targets": targets,
                            "bridge": {"backoff_s": 0.01, "breaker_min_calls": 4, **bridge}}},
        "models": {"cloud": {"pool": "cloud", "kind": "chat"},
                   "cloud-embed": {"pool": "cloud", "kind": "embed"}},
    })


async def _start(config: SwitchyardConfig, start_worker: StartWorker,
                 aredis: aioredis.Redis) -> BridgeEngine:
    engine = build_engine(config.pools["cloud"], config=config, redis=aredis)
    assert isinstance(engine, BridgeEngine)
    await start_worker(config, "cloud", engine)
    return engine


async def test_a_failing_primary_fails_over_and_its_breaker_opens(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider],
) -> None:
    primary, secondary = fakes[0], fakes[1]
    primary.set(error_status=500)
    config = _config(prefix, fakes)
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("cloud", USER, max_tokens=4, stream=i % 2 == 0)
                for i in range(20)]
        results = [await job.result(timeout=30) for job in jobs]
    assert {r.text for r in results} == {"w1 w2 w3 w4"}
    assert {r.served_by.provider for r in results if r.served_by} == {"p1"}
    assert all(r.cost_usd == pytest.approx((r.usage.input_tokens + 2 * 4) / 1e6)
               for r in results)
    from switchyard.ops.status import spend

    spent = await spend(aredis, config)  # recorded just after each outcome went out
    for _ in range(100):
        if spent.get("provider:p1", 0) >= sum(r.cost_usd or 0 for r in results) - 1e-9:
            break
        await asyncio.sleep(0.02)
        spent = await spend(aredis, config)
    assert spent["provider:p1"] == pytest.approx(sum(r.cost_usd or 0 for r in results))
    assert spent["tenant:-"] == pytest.approx(spent["provider:p1"])
    state = await aredis.hget(Keys(prefix).breaker("p0", "m-p0"), "state")
    assert state == "open"
    assert primary.calls["/v1/chat/completions"] < 20  # the open breaker spared it
    assert secondary.calls["/v1/chat/completions"] == 20


async def test_retry_after_is_honoured_and_a_401_is_not_retried(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SY_TEST_KEY_0", "sk-secret-do-not-leak")
    fakes[0].set(api_key="another-key")  # the primary rejects our key: 401
    fakes[1].set(error_status=429, retry_after_s=0.6, fail_first=1)  # then healthy
    config = _config(prefix, fakes, max_attempts=4)
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        result = await (await client.chat("cloud", USER, max_tokens=3)).result(timeout=30)
    assert result.text == "w1 w2 w3" and result.served_by and result.served_by.provider == "p1"
    assert fakes[0].statuses[401] == 1  # tried once, never again
    first, second = list(fakes[1].times)[:2]
    assert second - first >= 0.6  # not before its Retry-After
    assert await aredis.hget(Keys(prefix).breaker("p0", "m-p0"), "state") == "open"


async def test_a_stream_cut_before_its_first_token_fails_over_unseen(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider],
) -> None:
    fakes[0].set(cut_after=0)
    config = _config(prefix, fakes, kinds=("openai", "anthropic"))
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.chat("cloud", USER, max_tokens=5, stream=True)
        streamed = "".join([d async for d in job])
        result = await job.result(timeout=30)
    assert streamed == result.text == "w1 w2 w3 w4 w5"
    assert result.served_by and result.served_by.provider == "p1"  # Anthropic answered
    assert fakes[1].calls["/v1/messages"] == 1


async def test_a_stream_cut_after_tokens_ends_with_a_typed_error(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider],
) -> None:
    fakes[0].set(cut_after=3)
    config = _config(prefix, fakes)
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.chat("cloud", USER, max_tokens=8, stream=True)
        seen: list[str] = []
        with pytest.raises(JobFailed) as failure:
            async for delta in job:
                seen.append(delta)
    assert failure.value.code == "stream_interrupted"
    assert "".join(seen) == "w1 w2 w3"  # what was sent stays sent; no success claimed
    assert fakes[1].calls["/v1/chat/completions"] == 0


async def test_all_targets_down_fails_fast_within_the_retry_budget(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SY_TEST_KEY_0", "sk-secret-do-not-leak")
    for fake in fakes:
        fake.set(error_status=503)
    config = _config(prefix, fakes, kinds=("openai",) * 3, breaker_consecutive=1000,
                     breaker_min_calls=1000, max_attempts=6)
    engine = await _start(config, start_worker, aredis)
    jobs_n = 100
    started = time.monotonic()
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("cloud", USER, max_tokens=4, deadline_s=10)
                for _ in range(jobs_n)]
        errors = []
        for job in jobs:
            with pytest.raises(JobFailed) as failure:
                await job.result(timeout=30)
            errors.append(failure.value)
    assert time.monotonic() - started < 10
    assert {e.code for e in errors} == {"providers_failed"}
    assert "503" in errors[0].message
    assert all("sk-secret" not in e.message for e in errors)
    calls = sum(f.calls["/v1/chat/completions"] for f in fakes)
    retry_ratio = config.pools["cloud"].bridge.retry_ratio
    # Each job calls each target once (failover); calls beyond that are retries, which
    # the budget holds to its reserve plus retry_ratio per job.
    retries = calls - 3 * jobs_n
    assert 0 < retries <= jobs_n * retry_ratio + 10
    assert engine.budget.tokens < 1
    # Backpressure: jobs no provider served did not drain the stream, so its measured
    # drain rate (and every cap sized from it) stays at nothing.
    drain = await aredis.hgetall(Keys(prefix).partition("cloud", 0).drain("standard"))
    assert drain and int(drain["n"]) == 0 and float(drain.get("rate", 0)) == 0


async def test_embeddings_through_a_provider(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider],
) -> None:
    config = _config(prefix, fakes)
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        result = await (await client.embed("cloud-embed", ["a", "b"])).result(timeout=30)
    assert len(result.vectors) == 2 and result.dimensions == 8
    assert result.served_by and result.served_by.provider == "p0"


def test_rate_limit_headers_announce_pauses() -> None:
    from datetime import UTC, datetime, timedelta

    from switchyard.workers.ratelimit import announced_pause

    assert announced_pause({"x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": "1m30s"}) == 90
    assert announced_pause({"x-ratelimit-remaining-tokens": "0",
                            "x-ratelimit-reset-tokens": "250ms"}) == 0.25
    assert announced_pause({"x-ratelimit-remaining-requests": "12",
                            "x-ratelimit-reset-requests": "1s"}) == 0
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    pause = announced_pause({"anthropic-ratelimit-requests-remaining": "0",
                             "anthropic-ratelimit-requests-reset": soon})
    assert 28 < pause <= 30
    assert announced_pause({}) == 0


async def test_requests_per_minute_are_shared_by_every_bridge(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider],
) -> None:
    config = _config(prefix, fakes[:1], kinds=("openai",))
    providers = {**config.providers}
    providers["p0"] = providers["p0"].model_copy(update={"rpm": 1200, "burst_s": 0.5})
    config = config.model_copy(update={"providers": providers})  # 20/s, 10 at once
    for _ in range(2):  # two bridges, one budget
        await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("cloud", USER, max_tokens=2) for _ in range(40)]
        texts = [(await job.result(timeout=30)).text for job in jobs]
    assert set(texts) == {"w1 w2"}
    times = sorted(fakes[0].times)
    assert len(times) == 40
    assert times[-1] - times[0] >= 1.3  # (40 - 10) calls at 20 per second
    assert sum(1 for t in times if t - times[0] < 0.25) <= 10 + 5 + 2


async def test_a_provider_announcing_no_requests_left_is_paused_before_any_429(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider],
) -> None:
    fakes[0].set(headers={"x-ratelimit-remaining-requests": "0",
                          "x-ratelimit-reset-requests": "700ms"})
    config = _config(prefix, fakes[:1], kinds=("openai",))
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        for _ in range(3):
            await (await client.chat("cloud", USER, max_tokens=2)).result(timeout=30)
    first, second, third = list(fakes[0].times)
    assert second - first >= 0.65 and third - second >= 0.65
    assert set(fakes[0].statuses) == {200}


async def test_adapters_send_each_provider_its_own_request_shape(
    fakes: list[FakeProvider], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from switchyard.broker.config import ProviderConfig
    from switchyard.broker.schemas import ChatMessage
    from switchyard.workers.providers import build_provider

    monkeypatch.setenv("SY_KEY_A", "sk-a")
    monkeypatch.setenv("SY_KEY_B", "sk-b")
    messages = [ChatMessage(role="system", content="be brief"),
                ChatMessage(role="user", content="hi")]
    params = {"max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "stop": ["\n"], "seed": 7}
    openai = build_provider("a", ProviderConfig(kind="openai", base_url=fakes[0].url,
                                                api_key_env="SY_KEY_A"))
    anthropic = build_provider("b", ProviderConfig(kind="anthropic", base_url=fakes[1].url,
                                                   api_key_env="SY_KEY_B"))
    try:
        for provider in (openai, anthropic):
            done = await provider.chat("m", messages, params, lambda text: None, 5)
            assert (done.text, done.output_tokens) == ("w1 w2 w3", 3)
    finally:
        await openai.aclose()
        await anthropic.aclose()
    path, headers, body = fakes[0].requests[0]
    assert path == "/v1/chat/completions" and headers["authorization"] == "Bearer sk-a"
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert (body["seed"], body["stop"], body["max_tokens"]) == (7, ["\n"], 3)
    path, headers, body = fakes[1].requests[0]
    assert path == "/v1/messages" and headers["x-api-key"] == "sk-b"
    assert headers["anthropic-version"] == "2023-06-01"
    assert body["system"] == "be brief" and body["messages"] == [{"role": "user",
                                                                  "content": "hi"}]
    assert body["stop_sequences"] == ["\n"] and "seed" not in body


async def test_weights_share_first_attempts(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider],
) -> None:
    config = _config(prefix, fakes)
    pool = config.pools["cloud"]
    targets = [t.model_copy(update={"weight": w}) for t, w in zip(pool.targets, (1, 3),
                                                                   strict=True)]
    config = config.model_copy(update={"pools": {"cloud": pool.model_copy(
        update={"targets": targets})}})
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("cloud", USER, max_tokens=1) for _ in range(200)]
        for job in jobs:
            await job.result(timeout=30)
    first, second = (f.calls["/v1/chat/completions"] for f in fakes[:2])
    assert first + second == 200
    assert 20 <= first <= 80  # about a quarter


async def test_breakers_send_successes_in_bulk_and_failures_at_once(
    prefix: str, aredis: aioredis.Redis,
) -> None:
    from switchyard.broker import Scripts
    from switchyard.broker.config import BridgeConfig
    from switchyard.workers.breaker import Breakers

    scripts = Scripts(aredis)
    calls: list[str] = []
    real = scripts.call

    async def counting(name, keys, args):  # type: ignore[no-untyped-def]
        calls.append(name)
        return await real(name, keys, args)

    scripts.call = counting  # type: ignore[method-assign]
    breakers = Breakers(scripts, Keys(prefix), BridgeConfig(breaker_min_calls=1000,
                                                            breaker_consecutive=1000))
    for _ in range(50):
        assert (await breakers.allow("p", "m")).allowed
        await breakers.record("p", "m", "ok")
    assert calls.count("breaker_allow") <= 2 and calls.count("breaker_record") <= 2
    assert await breakers.record("p", "m", "fail") == "closed"
    stored = await aredis.hgetall(Keys(prefix).breaker("p", "m"))
    assert int(stored["calls"]) == 51 and int(stored["fails"]) == 1  # nothing lost
    await breakers.allow("p", "m")
    assert calls.count("breaker_allow") >= 2  # a failure ends the cached verdict


async def test_keys_echoed_by_a_provider_never_leak(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: aioredis.Redis,
    fakes: list[FakeProvider], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 14, point 8: an error body that repeats our Authorization / x-api-key header
    reaches no result, Redis key or log line with the key in it."""
    secrets = ["sk-live-0123456789abcdef", "hunter2hunter2"]
    for i, secret in enumerate(secrets):
        monkeypatch.setenv(f"SY_TEST_KEY_{i}", secret)
        fakes[i].set(error_status=500, echo_auth=True)
    config = _config(prefix, fakes, kinds=("openai", "anthropic"), max_attempts=2)
    await _start(config, start_worker, aredis)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.chat("cloud", USER, max_tokens=3)
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=30)
    assert "redacted" in failed.value.message  # the provider's text is there, scrubbed
    stored = [str(await aredis.dump(key)) async for key in aredis.scan_iter(f"{prefix}*")]
    for secret in secrets:
        assert secret not in str(failed.value)
        assert not any(secret in s for s in stored)
        assert secret not in caplog.text
