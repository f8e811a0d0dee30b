"""A sticky CUDA error (issue 17, fix 2), on CPU: the model raises what torch raises after
a device-side assert. The worker hands its jobs back without spending an attempt and
stops with ``DeviceLost``; a healthy worker then serves every one of them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from switchyard.broker.keys import Keys
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher import AsyncClient
from switchyard.workers import Worker
from switchyard.workers.engines.costs import guard_oom
from switchyard.workers.engines.generate import GenerateEngine
from switchyard.workers.engines.joining import DecodeLoop
from switchyard.workers.engines.tiny_llama import BUILTIN
from switchyard.workers.errors import DeviceLost
from switchyard.workers.memory import FixedBudget
from tests.conftest import StartWorker, make_config

ASSERT = ("CUDA error: device-side assert triggered\nCUDA kernel errors might be "
          "asynchronously reported at some other API call")


class AssertingModel:
    """Every call after the first ``healthy`` raises the sticky error, as a real GPU
    context does once an assert fired."""

    def __init__(self, model: Any, healthy: int) -> None:
        self.model, self.config, self.healthy = model, model.config, healthy
        self.calls = 0

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > self.healthy:
            raise torch.AcceleratorError(ASSERT)
        return self.model(**kwargs)


def test_sticky_cuda_errors_become_device_lost() -> None:
    def fails() -> None:
        raise RuntimeError(ASSERT)

    with pytest.raises(DeviceLost, match="device-side assert"):
        guard_oom(torch, "cuda:0", fails)


async def test_a_lost_device_hands_every_job_back_without_an_attempt(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    config = make_config(prefix, llm={"engine": "generate", "model": BUILTIN, "max_batch": 2})
    config = config.model_copy(update={"watchdog": config.watchdog.model_copy(
        update={"max_attempts": 1})})  # one spent attempt would dead-letter a job
    sick = GenerateEngine(BUILTIN, "cpu")
    sick._loop.close()
    sick._loop = DecodeLoop(AssertingModel(sick.model, healthy=3), sick.tokenizer, "cpu",
                            lambda work: guard_oom(torch, "cpu", work))
    redis = RedisSettings.from_url(redis_url).connect()
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("llm", [{"role": "user", "content": f"q{i}"}], max_tokens=20,
                                  temperature=0) for i in range(6)]
        worker = Worker(redis, config, "llm", sick, probe=FixedBudget(1 << 30))
        with pytest.raises(DeviceLost):
            await asyncio.wait_for(worker.run(asyncio.Event()), 30)
        assert worker.stats.released >= 1 and worker.stats.dead_lettered == 0
        await start_worker(config, "llm", GenerateEngine(BUILTIN, "cpu"),
                           probe=FixedBudget(1 << 30))
        results = [await job.result(timeout=60) for job in jobs]
        dead = await client.redis.xlen(Keys(prefix).partitions("llm", 1)[0].dead)
    await redis.aclose()
    assert [r.usage.output_tokens for r in results] == [20] * 6
    assert dead == 0
