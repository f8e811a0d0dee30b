"""Memory accounting that matches what a running generation batch allocates (issue 17,
fix 5), measured on CPU: the real KV-cache tensors of every step are summed and held
against what the worker was allowed and what it charged."""

from __future__ import annotations

import asyncio
from typing import Any

from switchyard.broker.schemas import ChatRequest
from switchyard.dispatcher import AsyncClient
from switchyard.workers.engines.costs import kv_bytes_per_token
from switchyard.workers.engines.generate import GenerateEngine
from switchyard.workers.engines.tiny_llama import BUILTIN
from switchyard.workers.memory import FixedBudget, MemoryReading
from tests.conftest import StartWorker, make_config


def KV(engine: GenerateEngine) -> int:
    return kv_bytes_per_token(engine.model)


class CacheMeter:
    """The tiny Llama, summing the bytes of the KV cache each step leaves (the real
    tensors: keys and values of every layer) and counting the rows it decodes."""

    def __init__(self, model: Any) -> None:
        self.model, self.config = model, model.config
        self.most_bytes = 0
        self.most_rows = 0
        self.samples = 0
        self.held_now = 0

    def __call__(self, **kwargs: Any) -> Any:
        out = self.model(**kwargs)
        cache = out.past_key_values
        held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
        self.most_bytes = max(self.most_bytes, held)
        self.held_now = held
        if kwargs.get("past_key_values") is not None:
            self.most_rows = max(self.most_rows, int(kwargs["input_ids"].shape[0]))
            self.samples += 1
        return out


def _metered(engine: GenerateEngine) -> CacheMeter:
    """Activations as large as the cache per token, as in a 1B Llama in bf16 (the tiny
    one's are three times its cache, which would hide an undercharged cache)."""
    meter = CacheMeter(engine.model)
    engine._loop._model = meter
    engine.token_bytes = 2 * KV(engine)
    return meter


class GpuLike:
    """Free memory as a GPU reports it while the engine's cache (the real tensors the
    meter saw last) lives there."""

    source = "gpu-like"

    def __init__(self, total: int, meter: CacheMeter) -> None:
        self.total, self.meter = total, meter

    def read(self) -> MemoryReading:
        return MemoryReading(self.total - self.meter.held_now, self.total)


def _length(engine: GenerateEngine, content: str, max_tokens: int) -> int:
    """A job's final length (prompt + max tokens): its row's width at the end."""
    request = ChatRequest(messages=[{"role": "user", "content": content}],
                          max_tokens=max_tokens)
    return len(engine.prompt_ids(request.messages)) + max_tokens


async def test_one_long_row_and_short_ones_stay_within_the_budget_padded(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    """One 250-token row and, once it is wide, eight short ones, each its own worker batch:
    joined, all nine rows are padded to the long one. Charged as 250 + 8 x ~46 tokens,
    they were all admitted and the cache outgrew the budget; charged as 9 x 250, only as
    many join as fit."""
    config = make_config(prefix, llm={"engine": "generate", "model": BUILTIN, "max_batch": 1,
                                      "memory_target": 1.0, "memory_margin": 0})
    engine = GenerateEngine(BUILTIN, "cpu")
    meter = _metered(engine)
    long = _length(engine, "long", 240)
    budget = 640 * engine.token_bytes  # > 250 + 8 x 46 tokens; < 9 x 250 slots of cache
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("llm", [{"role": "user", "content": "long"}], max_tokens=240,
                                  temperature=0)]
        await start_worker(config, "llm", engine, probe=FixedBudget(budget))
        for _ in range(30_000):  # until the long row is wide
            if meter.samples >= 150:
                break
            await asyncio.sleep(0.002)
        jobs += [await client.chat("llm", [{"role": "user", "content": f"s{i}"}],
                                   max_tokens=36, temperature=0) for i in range(8)]
        results = [await job.result(timeout=60) for job in jobs]
    assert [r.usage.output_tokens for r in results] == [240] + [36] * 8
    assert meter.samples and 1 < meter.most_rows < 9
    assert meter.most_bytes <= budget  # the real cache tensors stayed within the budget
    assert meter.most_bytes <= meter.most_rows * long * KV(engine)


async def test_the_running_cache_is_counted_once_against_free_memory(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    """Free memory already has the running cache taken out; charging the running rows
    again against it admitted fewer rows than fit (3 of the 4 here)."""
    config = make_config(prefix, llm={"engine": "generate", "model": BUILTIN, "max_batch": 1,
                                      "memory_target": 1.0, "memory_margin": 0})
    engine = GenerateEngine(BUILTIN, "cpu")
    meter = _metered(engine)
    width = _length(engine, "q0", 90)
    slot = KV(engine) * width  # one row's cache at its widest
    total = 5 * slot  # four rows' cache and one row's forward: four rows fit
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("llm", [{"role": "user", "content": f"q{i}"}], max_tokens=90,
                                  temperature=0) for i in range(8)]
        await start_worker(config, "llm", engine, probe=GpuLike(total, meter))
        results = [await job.result(timeout=60) for job in jobs]
    assert [r.usage.output_tokens for r in results] == [90] * 8
    assert meter.most_rows == 4
    assert meter.most_bytes <= 4 * slot
