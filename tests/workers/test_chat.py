"""Chat generation through the queue: real Redis, an in-process worker, the tiny Llama."""

from __future__ import annotations

import asyncio

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
