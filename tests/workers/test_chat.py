"""Chat generation through the queue: real Redis, an in-process worker, the tiny Llama."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchyard.dispatcher import AsyncClient, InvalidRequest, JobFailed
from switchyard.workers.engines.generate import GenerateEngine
from switchyard.workers.engines.tiny_llama import BUILTIN
from tests.conftest import StartWorker, make_config

QUESTIONS = ["what is a queue?", "hi", "tell me about redis streams and consumer groups", "?"]


@pytest.fixture(scope="module")
def engine() -> GenerateEngine:
    return GenerateEngine(BUILTIN, "cpu", max_input_tokens=200)


def _config(prefix: str, max_batch: int = 8):
    return make_config(prefix, llm={"engine": "generate", "model": BUILTIN,
                                    "max_batch": max_batch, "max_input_tokens": 200})


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_streamed_deltas_join_to_the_final_text(
    prefix: str, redis_url: str, start_worker: StartWorker, engine: GenerateEngine
) -> None:
    config = _config(prefix)
    worker = await start_worker(config, "llm", engine)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.chat("llm", _user("stream me"), max_tokens=40, temperature=0.7,
                                seed=3, stream=True)
        deltas = [delta async for delta in job]
        result = await job.result(timeout=30)
    assert len(deltas) > 1
    assert "".join(deltas) == result.text
    assert result.finish_reason == "length"
    assert result.usage.output_tokens == 40 and result.usage.input_tokens > 0
    assert result.ttft_ms is not None and result.ttft_ms >= 0
    assert result.served_by is not None and result.served_by.worker == worker.consumer


async def test_a_batch_equals_the_same_prompts_one_at_a_time(
    prefix: str, redis_url: str, start_worker: StartWorker, engine: GenerateEngine
) -> None:
    config = _config(prefix)
    async with AsyncClient(config, redis_url=redis_url) as client:
        together = [await client.chat("llm", _user(q), max_tokens=16, temperature=0.0)
                    for q in QUESTIONS]  # queued before any worker runs: one batch
        batched = engine.run  # record the batch sizes the worker ran
        sizes: list[int] = []

        async def recording(jobs, served_by, emit):  # type: ignore[no-untyped-def]
            sizes.append(len(jobs))
            return await batched(jobs, served_by, emit)

        engine.run = recording  # type: ignore[method-assign]
        try:
            await start_worker(config, "llm", engine)
            texts = [(await job.result(timeout=60)).text for job in together]
            alone = []
            for q in QUESTIONS:
                alone.append((await (await client.chat(
                    "llm", _user(q), max_tokens=16, temperature=0.0)).result(timeout=60)).text)
        finally:
            del engine.run
    assert sizes[0] == len(QUESTIONS)
    assert sizes[1:] == [1] * len(QUESTIONS)
    assert texts == alone


async def test_stop_strings_and_too_long_prompts(
    prefix: str, redis_url: str, start_worker: StartWorker, engine: GenerateEngine
) -> None:
    config = _config(prefix)
    await start_worker(config, "llm", engine)
    async with AsyncClient(config, redis_url=redis_url) as client:
        free = await (await client.chat("llm", _user("x"), max_tokens=30, temperature=0)).result(
            timeout=30)
        stop = free.text[12:14]
        cut = await (await client.chat("llm", _user("x"), max_tokens=30, temperature=0,
                                       stop=stop)).result(timeout=30)
        assert cut.finish_reason == "stop" and cut.text == free.text[:free.text.index(stop)]
        long = await client.chat("llm", _user("y" * 500), max_tokens=5)
        with pytest.raises(JobFailed) as failure:
            await long.result(timeout=30)
        assert failure.value.code == "context_length_exceeded"
        assert "max_input_tokens" in failure.value.message


async def test_echo_chat_streams_and_kinds_are_checked(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    config = make_config(prefix)
    await start_worker(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.chat("echo-chat", _user("one two three"), stream=True)
        assert "".join([d async for d in job]) == "one two three"  # pieces of one wake-up join
        assert (await job.result(timeout=10)).text == "one two three"
        background = client.job(job.id)  # no deltas for a handle by id: the text at the end
        assert [d async for d in background.stream(timeout=10)] == ["one two three"]
        with pytest.raises(InvalidRequest, match="serves embed requests, not chat"):
            await client.chat("echo", _user("x"))
        with pytest.raises(InvalidRequest, match="messages"):
            await client.chat("echo-chat", [])
        with pytest.raises(InvalidRequest, match="temperature"):
            await client.chat("echo-chat", _user("x"), temperature=5)
        with pytest.raises(InvalidRequest, match="role"):
            await client.chat("echo-chat", [{"role": "robot", "content": "x"}])


async def test_stream_times_out_with_no_worker(prefix: str, redis_url: str) -> None:
    from switchyard.dispatcher import ResultTimeout

    config = make_config(prefix)
    async with AsyncClient(config, redis_url=redis_url) as client:
        job = await client.chat("echo-chat", _user("nobody serves this"), stream=True)
        with pytest.raises(ResultTimeout):
            async with asyncio.timeout(5):
                _ = [d async for d in job.stream(timeout=0.3)]


async def test_a_cancelled_stream_stops_its_generation_early(
    prefix: str, redis_url: str, start_worker: StartWorker, engine: GenerateEngine
) -> None:
    """The gateway cancels the job of a caller that went away; the worker sees it in the
    round trip that streams the deltas, and the engine drops the row at its next step."""
    config = _config(prefix)
    outputs: list[object] = []
    running = engine.run

    async def recording(jobs, served_by, emit):  # type: ignore[no-untyped-def]
        out = await running(jobs, served_by, emit)
        outputs.extend(out)
        return out

    engine.run = recording  # type: ignore[method-assign]
    try:
        await start_worker(config, "llm", engine)
        async with AsyncClient(config, redis_url=redis_url) as client:
            job = await client.chat("llm", _user("go on and on"), max_tokens=600,
                                    temperature=0.0, stream=True)
            async for _ in job:
                break  # the first text: it runs
            assert await job.cancel()
            for _ in range(600):
                if outputs:
                    break
                await asyncio.sleep(0.05)
    finally:
        del engine.run
    (result,) = outputs
    assert result.usage.output_tokens < 300, result.usage  # type: ignore[attr-defined]


def test_a_sliding_window_model_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """Its cache drops old columns itself; joined rows would decode wrong."""
    from transformers import MistralConfig, MistralForCausalLM

    from switchyard.workers.engines.tiny_llama import build_tiny_llama
    from switchyard.workers.errors import EngineUnavailable

    _, tokenizer = build_tiny_llama()
    config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, vocab_size=259,
                           sliding_window=8)
    MistralForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(EngineUnavailable, match="DynamicSlidingWindowLayer"):
        GenerateEngine(str(tmp_path), "cpu")
    config.sliding_window = None  # the same model with full attention is served
    MistralForCausalLM(config).save_pretrained(tmp_path)
    assert GenerateEngine(str(tmp_path), "cpu").cache_bytes > 0


async def test_a_bfloat16_model_decodes_and_is_charged_half_the_cache() -> None:
    from switchyard.workers.engines.decoding import Prompt

    full = GenerateEngine(BUILTIN, "cpu")
    half = GenerateEngine(BUILTIN, "cpu", dtype="bfloat16")
    try:
        assert half.dtype == "bfloat16" and half.cache_bytes * 2 == full.cache_bytes
        prompt = Prompt(half.tokenizer("hello")["input_ids"], max_tokens=12)
        decoded = await half._generate([prompt, prompt], None)
        assert [d.completion_tokens for d in decoded] == [12, 12]
    finally:
        full.close()
        half.close()
