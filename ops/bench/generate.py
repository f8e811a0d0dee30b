"""`switchyard bench generate`: chat generation through the queue at several concurrencies,
with a bare transformers loop on the same prompts beside each (same machine, same run).

Through the queue: ``concurrency`` client tasks each submit a streaming chat request
(greedy, ``max_tokens`` new tokens), read its deltas and submit the next, until
``requests`` are done; tokens/s is completion tokens over the wall time, and time to first
token is measured by the client, from submit to the first delta. The bare loop runs the
same prompts through ``model.generate`` in left-padded batches of ``concurrency``.
Optionally (``--continuous``), transformers' continuous batching (``generate_batch``) on
the same prompts, once.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from switchyard.broker.config import SwitchyardConfig
from switchyard.dispatcher.client import AsyncClient
from switchyard.ops.bench.common import bench_env, closed_loop, percentile
from switchyard.ops.processes import WorkerProcess

__all__ = ["GenerateBenchOptions", "GenerateRow", "run_generate_bench"]

CONFIG = """
[redis]
prefix = "sybench"
[pools.llm]
engine = "generate"
model = "{model}"
device = "{device}"
max_batch = {batch}
max_input_tokens = 1024
[pools.llm.caps]
standard = 1000000
[models.llm]
pool = "llm"
kind = "chat"
"""


@dataclass(frozen=True)
class GenerateBenchOptions:
    concurrency: tuple[int, ...] = (1, 8, 32)
    requests: int = 96
    max_tokens: int = 64
    model: str = "builtin:tiny-llama"
    device: str = "auto"
    continuous: bool = False
    redis_url: str | None = None


@dataclass(frozen=True)
class GenerateRow:
    concurrency: int
    queue_tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    bare_tokens_per_s: float
    """``model.generate`` on the same prompts in batches of ``concurrency``."""


def prompts(n: int) -> list[str]:
    topics = ["queues", "GPUs", "Redis streams", "batching", "deadlines", "providers"]
    return [f"Question {i}: tell me about {topics[i % len(topics)]}" + " please" * (i % 5)
            for i in range(n)]


async def through_queue(config: SwitchyardConfig, url: str, texts: list[str], concurrency: int,
                        max_tokens: int) -> tuple[float, list[float]]:
    """(completion tokens/s, time-to-first-token of every request in ms)."""
    ttft: list[float] = []
    tokens = 0

    async def one(client: AsyncClient, text: str) -> None:
        nonlocal tokens
        t0 = time.perf_counter()
        job = await client.chat("llm", [{"role": "user", "content": text}],
                                max_tokens=max_tokens, temperature=0.0, stream=True)
        first = None
        async for _ in job.stream(timeout=600):
            first = first or time.perf_counter()
        if first is not None:
            ttft.append((first - t0) * 1000)
        tokens += (await job.result(timeout=600)).usage.output_tokens

    async with AsyncClient(config, redis_url=url) as client:
        await one(client, "warm-up")
        tokens, ttft = 0, []
        start = time.perf_counter()
        await closed_loop(len(texts), concurrency, lambda i: one(client, texts[i]))
        return tokens / (time.perf_counter() - start), ttft


def bare_generate(model: Any, tokenizer: Any, texts: list[str], batch: int, max_tokens: int,
                  device: str) -> float:
    """Completion tokens/s of ``model.generate`` (greedy, left-padded batches)."""
    import torch

    chats = [tokenizer.apply_chat_template([{"role": "user", "content": t}],
                                           add_generation_prompt=True, tokenize=False)
             for t in texts]
    eos, tokens = tokenizer.eos_token_id, 0
    start = time.perf_counter()
    for i in range(0, len(chats), batch):
        encoded = tokenizer(chats[i:i + batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        for row in out[:, encoded["input_ids"].shape[1]:].tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens / (time.perf_counter() - start)


def continuous_batching(model: Any, tokenizer: Any, texts: list[str], max_tokens: int) -> float:
    """Completion tokens/s of transformers' ``generate_batch`` on the same prompts."""
    from transformers import GenerationConfig

    ids = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": t}],
                                                   add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False)["input_ids"] for t in texts]
    make: Any = GenerationConfig
    config = make(max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    start = time.perf_counter()
    out = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
    tokens = sum(len(o.generated_tokens) for o in out.values())
    return tokens / (time.perf_counter() - start)


def run_generate_bench(options: GenerateBenchOptions) -> tuple[list[GenerateRow], float | None]:
    from switchyard.workers.engines.generate import GenerateEngine

    texts = prompts(options.requests)
    toml = CONFIG.format(model=options.model, device=options.device,
                         batch=max(options.concurrency))
    rows = []
    with bench_env(toml, options.redis_url) as env, \
            WorkerProcess("llm", env.redis_url, env.config_path, env.config):
        queued = [asyncio.run(through_queue(env.config, env.redis_url, texts, c,
                                            options.max_tokens))
                  for c in options.concurrency]
    bare = GenerateEngine(options.model, options.device)
    model, tokenizer = bare.model, bare.tokenizer
    bare_generate(model, tokenizer, texts[:2], 2, 4, bare.device)  # warm-up
    for c, (rate, ttft) in zip(options.concurrency, queued, strict=True):
        base = bare_generate(model, tokenizer, texts, c, options.max_tokens, bare.device)
        rows.append(GenerateRow(c, round(rate, 1), round(percentile(ttft, 50), 1),
                                round(percentile(ttft, 99), 1), round(base, 1)))
    cb = None
    if options.continuous:
        cb = round(continuous_batching(model, tokenizer, texts, options.max_tokens), 1)
    return rows, cb


def render(result: tuple[list[GenerateRow], float | None]) -> str:
    rows, cb = result
    lines = [f"{'concurrency':>12}{'queue tok/s':>13}{'vs c=1':>8}{'TTFT p50':>10}"
             f"{'TTFT p99':>10}{'bare generate tok/s':>21}{'queue/bare':>12}"]
    base = rows[0].queue_tokens_per_s if rows else 1.0
    for r in rows:
        lines.append(f"{r.concurrency:>12}{r.queue_tokens_per_s:>13,.1f}"
                     f"{r.queue_tokens_per_s / base:>7.2f}x{r.ttft_p50_ms:>8.1f}ms"
                     f"{r.ttft_p99_ms:>8.1f}ms{r.bare_tokens_per_s:>21,.1f}"
                     f"{r.queue_tokens_per_s / r.bare_tokens_per_s:>12.3f}")
    if cb is not None:
        lines.append(f"transformers continuous batching (generate_batch), all prompts at once: "
                     f"{cb:,.1f} tok/s")
    lines.append(json.dumps({"rows": [asdict(r) for r in rows], "continuous_tokens_per_s": cb}))
    return "\n".join(lines)
