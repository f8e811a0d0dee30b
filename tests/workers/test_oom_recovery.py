"""Recovering from running out of device memory (issue 17, fix 1), on CPU: a model wrapper
raises torch's own ``OutOfMemoryError`` where a GPU would, inside the real decode loop."""

from __future__ import annotations

import time
import weakref
from typing import Any

import pytest
import torch

from switchyard.dispatcher import AsyncClient
from switchyard.workers.engines.costs import free_memory, guard_oom
from switchyard.workers.engines.decoding import Prompt, decode_batch
from switchyard.workers.engines.generate import GenerateEngine
from switchyard.workers.engines.joining import DecodeLoop
from switchyard.workers.engines.tiny_llama import BUILTIN, build_tiny_llama
from switchyard.workers.errors import OutOfMemory
from switchyard.workers.memory import FixedBudget
from switchyard.workers.sizing import MAX_SCALE, BatchSizer
from tests.conftest import StartWorker, make_config
from tests.workers.test_memory import SizedEngine


class OomModel:
    """The tiny Llama, raising ``torch.cuda.OutOfMemoryError`` on the first call that
    matches ``when(rows, prefill)`` (once). It keeps weak references to the caches of the
    call that failed and records, at the next call, which of them were still alive."""

    def __init__(self, model: Any, when: Any) -> None:
        self.model, self.when = model, when
        self.config = model.config
        self.fired = False
        self.perturb_after = False
        self.failed_caches: list[weakref.ref[Any]] = []
        self.alive_at_retry: int | None = None

    def __call__(self, **kwargs: Any) -> Any:
        if self.fired and self.alive_at_retry is None:
            self.alive_at_retry = sum(r() is not None for r in self.failed_caches)
        cache = kwargs.get("past_key_values")
        rows = int(kwargs["input_ids"].shape[0])
        if not self.fired and self.when(rows, cache is None):
            self.fired = True
            if cache is not None:
                self.failed_caches.append(weakref.ref(cache))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = self.model(**kwargs)
        if self.fired and self.perturb_after:  # other numerics after the OOM
            out.logits = out.logits + torch.randn_like(out.logits)
        return out


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_llama()


def _loop(model: Any, tokenizer: Any, on_oom: Any = lambda exc: None) -> DecodeLoop:
    return DecodeLoop(model, tokenizer, "cpu", lambda work: guard_oom(torch, "cpu", work),
                      lambda: free_memory(torch, "cpu"), on_oom)


def _prompts(tokenizer: Any, texts: list[str], max_tokens: int) -> list[Prompt]:
    return [Prompt(tokenizer(t)["input_ids"], max_tokens=max_tokens) for t in texts]


def test_a_step_oom_frees_the_batch_and_its_rows_resume_where_they_stopped(
        tiny: tuple[Any, Any]) -> None:
    """After the OOM the model computes slightly differently (as another batch shape does
    in bf16: here, a perturbation of its logits). Rows that started over would then
    produce other text than the callers already got; resumed rows keep it."""
    model, tokenizer = tiny
    wrapped = OomModel(model, lambda rows, prefill: not prefill and rows >= 3)
    wrapped.perturb_after = True
    events: list[OutOfMemory] = []
    loop = _loop(wrapped, tokenizer, events.append)
    deltas: dict[int, list[str]] = {0: [], 1: [], 2: []}
    prompts = [Prompt(tokenizer(t)["input_ids"], max_tokens=40, temperature=0.9, seed=i,
                      stream=True) for i, t in enumerate(["a", "bb", "ccc"])]
    try:
        done = loop.submit(prompts, lambda i, text: deltas[i].append(text) or True)
        results = done.result(timeout=60)
    finally:
        loop.close()
    assert wrapped.fired and len(events) == 1
    assert wrapped.failed_caches and wrapped.alive_at_retry == 0  # freed before the retry
    assert [r.completion_tokens for r in results] == [40, 40, 40]
    assert [r.text for r in results] == ["".join(deltas[i]) for i in range(3)]


def test_a_prefill_oom_leaves_the_running_rows_alone_and_the_newcomer_waits(
        tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    wrapped = OomModel(model, lambda rows, prefill: False)
    loop = _loop(wrapped, tokenizer)
    try:
        running = _prompts(tokenizer, ["the running one", "and another"], 60)
        first = loop.submit(running, None)
        while loop.steps < 3:
            time.sleep(0.001)
        wrapped.when = lambda rows, prefill: prefill
        late = _prompts(tokenizer, ["late"], 5)
        newcomer = loop.submit(late, None)
        texts = [d.text for d in first.result(timeout=60)]
        joined = newcomer.result(timeout=60)
    finally:
        loop.close()
    assert wrapped.fired
    assert texts == [d.text for d in decode_batch(model, tokenizer, running, device="cpu")]
    assert joined[0].text == decode_batch(model, tokenizer, late, device="cpu")[0].text


def test_a_row_that_runs_out_of_memory_alone_fails_with_out_of_memory(
        tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    wrapped = OomModel(model, lambda rows, prefill: not prefill)
    loop = _loop(wrapped, tokenizer)
    try:
        with pytest.raises(OutOfMemory, match="out of memory"):
            loop.submit(_prompts(tokenizer, ["alone"], 20), None).result(timeout=60)
        after = loop.submit(_prompts(tokenizer, ["next"], 3), None).result(timeout=60)
    finally:
        loop.close()
    assert after[0].completion_tokens == 3


def test_cublas_allocation_failures_are_out_of_memory() -> None:
    def cublas() -> None:
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate")

    with pytest.raises(OutOfMemory, match="CUBLAS_STATUS_ALLOC_FAILED"):
        guard_oom(torch, "cpu", cublas)

    def other() -> None:
        raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="shapes"):
        guard_oom(torch, "cpu", other)


def test_the_learned_scale_is_capped_decays_and_stays_out_of_too_large() -> None:
    engine = SizedEngine()
    sizer = BatchSizer(engine, _budget(100 * engine.token_bytes), max_batch_tokens=10_000)
    sizer.start()
    assert sizer.too_large(100) == "" and sizer.token_limit() == 100
    for event in range(1, 40):
        sizer.out_of_memory(event)
    assert sizer.scale == MAX_SCALE
    assert sizer.too_large(100) == ""  # what fits an idle worker still fits: not scaled
    assert not sizer.out_of_memory(39)  # the same event, seen again, teaches nothing
    for _ in range(200):
        sizer.ran_clean()
    assert sizer.scale < 1.1 and sizer.token_limit() > 90


def _budget(size: int) -> Any:
    from switchyard.workers.memory import Budget

    return Budget(FixedBudget(size))


async def test_one_oom_in_a_running_batch_is_one_event_and_every_job_succeeds(
    prefix: str, redis_url: str, start_worker: StartWorker
) -> None:
    """Eight requests (eight worker batches of one) decode together, and one OOM hits
    them all at once. The worker learns from it once (the scale grows by a quarter, not
    1.25^8), and every job still succeeds: none fails as if it did not fit alone."""
    config = make_config(prefix, llm={"engine": "generate", "model": BUILTIN, "max_batch": 1})
    engine = GenerateEngine(BUILTIN, "cpu")
    wrapped = OomModel(engine.model, lambda rows, prefill: not prefill and rows >= 8)
    engine._loop.close()
    engine._loop = _loop(wrapped, engine.tokenizer, lambda exc: engine.out_of_memory(exc))
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("llm", [{"role": "user", "content": f"q{i}"}], max_tokens=120,
                                  temperature=0) for i in range(8)]
        worker = await start_worker(config, "llm", engine, probe=FixedBudget(1 << 30))
        results = [await job.result(timeout=60) for job in jobs]
    assert wrapped.fired
    assert all(r.usage.output_tokens == 120 for r in results)
    assert worker.stats.oom_recoveries == 1
    assert worker._sizer.scale <= 1.25


class Publisher:
    """The delta publisher's contract (workers/deltas.py), in memory: each run of a job
    streams its text from the start; characters already passed on are dropped."""

    def __init__(self) -> None:
        self.passed: dict[int, str] = {}

    def emitter(self, keys: list[int]) -> Any:
        produced = dict.fromkeys(keys, 0)

        def emit(index: int, text: str) -> bool:
            key = keys[index]
            start = produced[key]
            produced[key] = start + len(text)
            sent = self.passed.get(key, "")
            if produced[key] > len(sent):
                self.passed[key] = sent + text[max(0, len(sent) - start):]
            return True

        return emit


def test_a_request_that_fails_alone_keeps_its_rows_progress_for_the_next_run(
        tiny: tuple[Any, Any]) -> None:
    """A request of three rows: one finishes, then the batch runs out of memory, and
    again with one row alone, so the request fails. Run again (as the worker's split
    does), each job resumes where it stopped or is done at once: with other numerics
    after the OOM, text started over would not match what its caller already has."""
    model, tokenizer = tiny
    wrapped = OomModel(model, lambda rows, prefill: not prefill and rows == 2)
    wrapped.perturb_after = True
    loop = _loop(wrapped, tokenizer)
    prompts = [Prompt(tokenizer(t)["input_ids"], max_tokens=n, temperature=0.9, seed=i,
                      stream=True, key=f"job{i}")
               for i, (t, n) in enumerate([("a", 4), ("bb", 40), ("ccc", 40)])]
    publisher = Publisher()
    try:
        first = loop.submit(prompts, publisher.emitter([0, 1, 2]))
        while not wrapped.fired:
            time.sleep(0.001)
        wrapped.fired, wrapped.when = False, lambda rows, prefill: not prefill  # alone
        with pytest.raises(OutOfMemory):
            first.result(timeout=60)
        results = [loop.submit([p], publisher.emitter([i])).result(timeout=60)[0]
                   for i, p in enumerate(prompts)]
    finally:
        loop.close()
    assert [r.completion_tokens for r in results] == [4, 40, 40]
    assert [r.text for r in results] == [publisher.passed[i] for i in range(3)]
