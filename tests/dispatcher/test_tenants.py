"""Tenant quotas (token buckets, jobs in flight, weighted shares) and the age gate, in the
enqueue script on a real Redis."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from switchyard.broker import Keys, SwitchyardConfig, ensure_groups
from switchyard.dispatcher import AdmissionRejected, AsyncClient, InvalidRequest
from switchyard.workers.engines.echo import EchoEngine
from tests.conftest import StartWorker, make_config

pytestmark = pytest.mark.cluster

USER = [{"role": "user", "content": "hi"}]


def _config(prefix: str, tenants: dict[str, Any], **pool: Any) -> SwitchyardConfig:
    data = make_config(prefix, held={"engine": "echo", **pool}).model_dump()
    data["tenants"] = tenants
    data["models"]["held-chat"] = {"pool": "held", "kind": "chat"}
    return SwitchyardConfig.model_validate(data)


async def _try(client: AsyncClient, n: int, tenant: str | None, model: str = "held",
               **kwargs: Any) -> list[str]:
    """Submit n jobs one after another: 'ok' or the rejection's reason/detail each."""
    out = []
    for i in range(n):
        try:
            await client.embed(model, f"t{i}", tenant=tenant, **kwargs)
            out.append("ok")
        except AdmissionRejected as exc:
            out.append(f"{exc.reason}/{exc.detail}")
    return out


async def test_requests_per_second_bucket(prefix: str, redis_url: str) -> None:
    config = _config(prefix, {"acme": {"rps": 5, "burst_s": 1}})
    async with AsyncClient(config, redis_url=redis_url) as client:
        assert await _try(client, 7, "acme") == ["ok"] * 5 + ["tenant_quota/rps"] * 2
        assert await _try(client, 3, "other") == ["ok"] * 3  # the default: no limit
        try:
            await client.embed("held", "x", tenant="acme")
            raise AssertionError("admitted past the bucket")
        except AdmissionRejected as exc:
            assert 0 < exc.retry_after <= 0.2 + 1e-9  # one request refills in 1/5 s
            await asyncio.sleep(exc.retry_after + 0.02)
        assert await _try(client, 2, "acme") == ["ok", "tenant_quota/rps"]


async def test_tokens_per_minute_bucket(prefix: str, redis_url: str) -> None:
    config = _config(prefix, {"acme": {"tpm": 100}})
    async with AsyncClient(config, redis_url=redis_url) as client:
        for _ in range(2):  # about 41 tokens each: 1 of input, 40 to generate
            await client.chat("held-chat", USER, max_tokens=40, tenant="acme")
        with pytest.raises(AdmissionRejected) as refused:
            await client.chat("held-chat", USER, max_tokens=40, tenant="acme")
        assert (refused.value.reason, refused.value.detail) == ("tenant_quota", "tpm")
        # 100/min refills 1 token each 0.6 s: about 23 s for the 23 or so missing.
        assert 10 < refused.value.retry_after < 30
        with pytest.raises(InvalidRequest, match="more than tenant 'acme'"):
            await client.chat("held-chat", USER, max_tokens=200, tenant="acme")


async def test_unknown_tenants_share_one_default_bucket(prefix: str, redis_url: str) -> None:
    """A new name buys nothing: every unconfigured name, and no name, draws on one bucket."""
    config = _config(prefix, {"default": {"rps": 2, "burst_s": 1}, "big": {"rps": 100}})
    async with AsyncClient(config, redis_url=redis_url) as client:
        assert await _try(client, 1, "stranger") == ["ok"]
        assert await _try(client, 2, "another") == ["ok", "tenant_quota/rps"]
        assert await _try(client, 1, None) == ["tenant_quota/rps"]
        assert await _try(client, 5, "big") == ["ok"] * 5


async def test_jobs_in_flight_limit_frees_on_cancel_and_on_completion(
    prefix: str, redis_url: str, start_worker: StartWorker,
) -> None:
    config = _config(prefix, {"acme": {"max_concurrent": 2}})
    async with AsyncClient(config, redis_url=redis_url) as client:
        first = await client.embed("held", "a", tenant="acme")
        await client.embed("held", "b", tenant="acme")
        assert await _try(client, 1, "acme") == ["tenant_quota/concurrent"]
        assert await first.cancel()
        assert await _try(client, 2, "acme") == ["ok", "tenant_quota/concurrent"]
        await start_worker(config, "held")  # the two queued jobs complete ...
        for _ in range(200):
            if await _try(client, 1, "acme") == ["ok"]:  # ... and free their places
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("completed jobs still count as in flight")


async def test_a_greedy_tenant_is_held_to_its_share_of_a_contended_stream(
    prefix: str, redis_url: str,
) -> None:
    config = _config(prefix, {"greedy": {"weight": 1}, "steady": {"weight": 3}},
                     caps={"standard": 40}, fair_share_at=0.25)
    async with AsyncClient(config, redis_url=redis_url) as client:
        assert await _try(client, 1, "steady") == ["ok"]
        greedy = await _try(client, 40, "greedy")
        # Below 10 queued (a quarter of the cap) anyone is admitted; past it, greedy may
        # hold a quarter of the cap (weights 1 and 3): 10 jobs.
        assert greedy == ["ok"] * 10 + ["tenant_quota/share"] * 30
        assert await _try(client, 29, "steady") == ["ok"] * 29  # all of its share is left
        assert await _try(client, 1, "steady") == ["tenant_quota/share"]  # 30 of 40: its own
        assert await _try(client, 1, "third") == ["pool_full/"]  # share 40/5, but it is full


async def test_age_gate_closes_once_the_oldest_waited_past_target_for_the_interval(
    prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    config = make_config(prefix, held={"engine": "echo", "age_gate_s": 0.3,
                                       "wait_targets": {"standard": 0.2}})
    keys = Keys(prefix).partition("held", 0)
    await ensure_groups(aredis, [keys])
    async with AsyncClient(config, redis_url=redis_url) as client:
        assert await _try(client, 3, None) == ["ok"] * 3
        start = time.monotonic()
        await asyncio.sleep(0.25)  # the oldest is past its target, not yet for 0.3 s
        assert await _try(client, 1, None) == ["ok"]
        await asyncio.sleep(0.6 - (time.monotonic() - start))
        with pytest.raises(AdmissionRejected) as refused:
            await client.embed("held", "late")
        assert refused.value.reason == "shed" and "oldest waited" in refused.value.detail
        # A worker takes everything waiting: the oldest undelivered is gone, the gate opens.
        await aredis.xreadgroup("workers", "w", {keys.stream("standard"): ">"})
        assert await _try(client, 1, None) == ["ok"]


async def test_a_retry_at_the_suggested_time_is_admitted(
    prefix: str, redis_url: str, start_worker: StartWorker,
) -> None:
    """A stream drained at a known rate (10 jobs/s), kept at its cap: each caller turned
    away retries once, after the ``retry_after`` it was given."""
    config = make_config(prefix, held={"engine": "echo", "max_batch": 1, "pack_window": 1,
                                       "caps": {"standard": 5}})
    await start_worker(config, "held", EchoEngine(delay_ms=100))
    async with AsyncClient(config, redis_url=redis_url) as client:
        warm = time.monotonic() + 1.6  # a full drain window, so the rate is measured
        while time.monotonic() < warm:
            await _try(client, 1, None)
            await asyncio.sleep(0.05)
        admitted, suggested = 0, []
        rng = random.Random(5)
        for i in range(30):
            while await _try(client, 1, None) == ["ok"]:  # fill the stream to its cap
                pass
            # The caller arrives at any moment, not just after a job completed.
            await asyncio.sleep(rng.uniform(0, 0.1))
            try:
                await client.embed("held", f"probe{i}")
                continue  # not turned away: not a probe of Retry-After
            except AdmissionRejected as exc:
                suggested.append(exc.retry_after)
                await asyncio.sleep(exc.retry_after * 1.05)
            admitted += await _try(client, 1, None) == ["ok"]
    assert len(suggested) >= 10
    assert all(0.05 < s < 0.3 for s in suggested)  # about one job's time (0.1 s)
    assert admitted >= 0.8 * len(suggested), (admitted, suggested)


async def test_a_full_stream_still_takes_a_tenant_below_its_share(
    prefix: str, redis_url: str,
) -> None:
    config = _config(prefix, {"greedy": {}, "steady": {}}, cap_floor=10,
                     wait_targets={"standard": 1.0})  # nothing drained: the cap is 10
    async with AsyncClient(config, redis_url=redis_url) as client:
        # Alone, greedy may fill the stream: no one else wants a share of it.
        assert await _try(client, 12, "greedy") == ["ok"] * 10 + ["pool_full/"] * 2
        # Full, it still takes steady up to its half; greedy, over its half, waits.
        assert await _try(client, 6, "steady") == ["ok"] * 5 + ["tenant_quota/share"]
        assert await _try(client, 1, "greedy") == ["tenant_quota/share"]
