"""Batches matched to a memory budget, out-of-memory recovery, and the memory probes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from switchyard.broker import JobEnvelope, ServedBy
from switchyard.dispatcher import AsyncClient, JobFailed
from switchyard.workers import EchoEngine, EngineOutput
from switchyard.workers.engines.base import Emit
from switchyard.workers.engines.generate import GenerateEngine
from switchyard.workers.engines.tiny_llama import BUILTIN
from switchyard.workers.errors import OutOfMemory
from switchyard.workers.memory import Budget, FixedBudget, MemoryReading, choose_probe
from tests.conftest import StartWorker, make_config

TOKEN_BYTES = 1_000


class SizedEngine(EchoEngine):
    """Echo with a real-looking cost: one token per character, TOKEN_BYTES per token; it
    records the padded tokens of every batch it ran, and runs out of memory above
    ``oom_above`` padded tokens (an engine whose cost estimate is too low)."""

    token_bytes = TOKEN_BYTES

    def __init__(self, oom_above: int | None = None) -> None:
        super().__init__()
        self.oom_above = oom_above
        self.ran: list[int] = []
        self.attempts: list[int] = []

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        texts = job.request.input  # type: ignore[union-attr]
        return len(texts), max(len(t) for t in texts)

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        padded = sum(self.cost(j)[0] for j in jobs) * max(self.cost(j)[1] for j in jobs)
        self.attempts.append(padded)
        if self.oom_above is not None and padded > self.oom_above:
            raise OutOfMemory(f"injected: {padded} padded tokens")
        self.ran.append(padded)
        return await super().run(jobs, served_by, emit)


class ShrinkingProbe:
    """Free memory that falls as the worker runs: the budget is read before every batch."""

    source = "fake"

    def __init__(self, free: list[int]) -> None:
        self.free = free
        self.reads = 0

    def read(self) -> MemoryReading:
        self.reads += 1
        return MemoryReading(self.free[min(self.reads - 1, len(self.free) - 1)], self.free[0])


async def _submit_all(client: AsyncClient, texts: list[str]) -> list[Any]:
    return [await client.embed("sized", t) for t in texts]


TEXTS = [("x" * (5 + (i * 7) % 40)) for i in range(60)]


async def test_batches_never_exceed_the_memory_budget(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    budget = 120 * TOKEN_BYTES  # about three jobs of 40 characters
    config = make_config(prefix, sized={"engine": "echo", "max_batch": 64, "memory_target": 1.0,
                                        "memory_margin": 0})
    engine = SizedEngine()
    probe = ShrinkingProbe([budget, budget, budget // 2])
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = await _submit_all(client, TEXTS)
        await start_worker(config, "sized", engine, probe=probe)
        results = [await job.result(timeout=30) for job in jobs]
    assert [r.echo for r in results] == [[t] for t in TEXTS]
    assert probe.reads >= len(engine.ran)  # read before every batch
    assert engine.ran[0] <= budget // TOKEN_BYTES
    assert max(engine.ran[1:]) <= budget // 2 // TOKEN_BYTES
    assert len(engine.ran) > 1


async def test_out_of_memory_splits_the_batch_and_every_job_succeeds_once(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    config = make_config(prefix, sized={"engine": "echo", "max_batch": 16})
    engine = SizedEngine(oom_above=100)  # the budget allows 1,000 tokens; 100 really fit
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = await _submit_all(client, TEXTS[:16])
        worker = await start_worker(config, "sized", engine,
                                    probe=FixedBudget(1_000 * TOKEN_BYTES))
        results = [await job.result(timeout=30) for job in jobs]
    assert [r.echo for r in results] == [[t] for t in TEXTS[:16]]
    assert worker.stats.oom_recoveries >= 1
    assert max(engine.ran) <= 100
    assert engine.attempts[0] > 100  # the first batch did run out of memory
    assert sum(1 for _ in engine.ran) < 16  # split in halves, not into single jobs


async def test_a_request_larger_than_the_whole_budget_fails_clearly(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    config = make_config(prefix, sized={"engine": "echo"})
    engine = SizedEngine(oom_above=45)
    async with AsyncClient(config, redis_url=redis_url) as client:
        huge = await client.embed("sized", "y" * 80)  # 80,000 bytes > 50,000 budget
        fits_badly = await client.embed("sized", "z" * 48)  # fits the budget, never memory
        small = await client.embed("sized", "ok")
        await start_worker(config, "sized", engine, probe=FixedBudget(50 * TOKEN_BYTES))
        with pytest.raises(JobFailed) as too_large:
            await huge.result(timeout=30)
        with pytest.raises(JobFailed) as no_memory:
            await fits_badly.result(timeout=30)
        assert (await small.result(timeout=30)).echo == ["ok"]
    assert too_large.value.code == "request_too_large"
    assert "budget" in too_large.value.message
    assert no_memory.value.code == "out_of_memory"
    assert 80 not in engine.attempts  # the oversized job never reached the engine


class OomOnceGenerate(GenerateEngine):
    """The tiny Llama, running out of memory on its first batch of several after some
    text has already been streamed."""

    def __init__(self) -> None:
        super().__init__(BUILTIN, "cpu")
        self.failed = False

    async def _generate(self, prompts: list[Any], emit: Emit | None) -> list[Any]:
        if len(prompts) > 1 and not self.failed:
            self.failed = True
            if emit is not None:
                real = await super()._generate(prompts, emit)  # streams everything ...
                assert real
            raise OutOfMemory("injected after streaming")  # ... then fails
        return await super()._generate(prompts, emit)


async def test_a_stream_survives_an_out_of_memory_retry_without_repeating_text(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    config = make_config(prefix, llm={"engine": "generate", "model": BUILTIN})
    engine = OomOnceGenerate()
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("llm", [{"role": "user", "content": f"q{i}"}], max_tokens=24,
                                  temperature=0.8, stream=True) for i in range(4)]
        await start_worker(config, "llm", engine, probe=FixedBudget(1 << 30))
        for job in jobs:
            streamed = "".join([d async for d in job])
            assert streamed == (await job.result(timeout=30)).text
    assert engine.failed


def test_budget_is_free_memory_times_target_less_margin() -> None:
    gib = 1 << 30
    assert Budget(ShrinkingProbe([10 * gib]), 0.9, 256 << 20).bytes() == int(9 * gib) - (256 << 20)
    assert Budget(ShrinkingProbe([100 << 20]), 0.9, 256 << 20).bytes() == 0
    assert Budget(FixedBudget(2 * gib), 0.9, 256 << 20).bytes() == 2 * gib  # used as it is


def test_probe_falls_back_without_nvidia_libraries(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="switchyard.workers.memory"):
        probe = choose_probe("cuda:0")
    import torch

    if torch.cuda.is_available():
        assert probe.source in {"nvml", "torch"}
    else:
        assert probe.source == "budget" and probe.read().free == 2 << 30
    assert len(caplog.records) == 1 and "memory:" in caplog.records[0].message
    assert choose_probe("cpu", 3 << 30).read() == MemoryReading(3 << 30, 3 << 30)
