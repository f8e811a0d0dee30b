"""`switchyard bench gpu`: the generate engine on one GPU, in one short script.

A random-weight Llama of about a billion parameters (``builtin:llama-1b``, built from a
config on the device: nothing is downloaded), served by an in-process worker through a
private Redis, measured in four parts:

1. **Memory.** Mixed-length requests at full concurrency while a sampler reads, every
   50 ms, what torch has allocated beyond the weights, against the worker's budget.
2. **Utilisation.** NVML's GPU utilisation over the same stretch (saturation).
3. **Tokens/s** through the queue at each concurrency, against a bare ``model.generate``
   loop and transformers' ``generate_batch`` on the same prompts, in batches of the same
   size.
4. **A real OOM.** The worker is told it has more memory than the device has free (a
   ballast tensor holds the rest), so a batch really runs out; every job must still
   succeed, once.

On a machine without CUDA it runs the same script on the tiny Llama, smaller, as a smoke
test (utilisation is not measured, and the OOM is injected: CPU allocations do not fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher.client import AsyncClient
from switchyard.ops.bench.common import bench_env
from switchyard.ops.bench.generate import CONFIG, bare_generate, continuous_batching, prompts

__all__ = ["GpuBenchOptions", "GpuReport", "render", "run_gpu_bench"]


@dataclass(frozen=True)
class GpuBenchOptions:
    model: str = ""
    """'': builtin:llama-1b on CUDA, builtin:tiny-llama elsewhere."""
    concurrency: tuple[int, ...] = (1, 8, 32)
    requests: int = 64
    max_tokens: int = 128
    oom_jobs: int = 16


@dataclass
class GpuReport:
    device: str
    model: str
    parameters: int
    budget_bytes: int
    peak_over_weights: int
    """Most torch held beyond the weights in any 50 ms sample (CUDA; 0 elsewhere)."""
    utilisation: list[float] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    oom_events: int = 0
    oom_jobs_ok: int = 0
    oom_jobs: int = 0
    oom_real: bool = False


def run_gpu_bench(options: GpuBenchOptions) -> GpuReport:
    import torch

    from switchyard.workers.engines.generate import GenerateEngine

    cuda = torch.cuda.is_available()
    model = options.model or ("builtin:llama-1b" if cuda else "builtin:tiny-llama")
    engine = GenerateEngine(model, "cuda:0" if cuda else "cpu", 2048)
    report = GpuReport(engine.device, model, sum(p.numel() for p in engine.model.parameters()),
                       0, 0)
    toml = CONFIG.format(model=model, device=engine.device, batch=max(options.concurrency))
    with bench_env(toml) as env:
        texts = prompts(options.requests)
        mixed = [t * (1 + i % 4) for i, t in enumerate(texts)]  # mixed lengths
        asyncio.run(_queue_parts(env.config, env.redis_url, engine, mixed, options, report))
        asyncio.run(_oom_part(env.config, env.redis_url, engine, texts, options, report))
    model_obj, tokenizer = engine.model, engine.tokenizer
    for row in report.rows:
        size = int(row["concurrency"])
        row["bare_tokens_per_s"] = round(bare_generate(
            model_obj, tokenizer, mixed, size, options.max_tokens, engine.device), 1)
        row["generate_batch_tokens_per_s"] = round(_batched(
            model_obj, tokenizer, mixed, size, options.max_tokens), 1)
    engine.close()
    return report


CB_CHUNKS = 4
"""``generate_batch`` calls per batch size (each sets up its own paged cache and warms up:
every chunk of the prompts would take too long for a 5-minute script)."""


def _batched(model: Any, tokenizer: Any, texts: list[str], size: int, max_tokens: int) -> float:
    """``generate_batch`` tokens/s, fed ``size`` prompts at a time (as the loop is), over
    the first ``CB_CHUNKS`` chunks."""
    rates = [continuous_batching(model, tokenizer, texts[i:i + size], max_tokens)
             for i in range(0, min(len(texts), size * CB_CHUNKS), size)]
    return sum(rates) / len(rates)


async def _queue_parts(config: SwitchyardConfig, url: str, engine: Any, texts: list[str],
                       options: GpuBenchOptions, report: GpuReport) -> None:
    """Parts 1-3 through the queue: tokens/s per concurrency, memory and utilisation."""
    from switchyard.ops.bench.generate import through_queue

    async with _worker(config, url, engine) as worker:
        report.budget_bytes = worker._sizer.capacity
        with _sampling(engine.device) as samples:
            for concurrency in options.concurrency:
                rate, ttft = await through_queue(config, url, texts, concurrency,
                                                 options.max_tokens)
                ttft.sort()
                report.rows.append({"concurrency": concurrency,
                                    "queue_tokens_per_s": round(rate, 1),
                                    "ttft_p50_ms": round(ttft[len(ttft) // 2], 1)})
        report.peak_over_weights = max(samples["held"], default=0)
        report.utilisation = samples["util"]


async def _oom_part(config: SwitchyardConfig, url: str, engine: Any, texts: list[str],
                    options: GpuBenchOptions, report: GpuReport) -> None:
    """Part 4: a budget larger than the memory there is; every job succeeds once."""
    import torch

    from switchyard.workers.memory import FixedBudget

    ballast = None
    injected: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if engine.device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        # What is left holds a row or two, not the batch: the batch runs out for real.
        ballast = torch.empty(max(0, free - (128 << 20)), dtype=torch.uint8,
                              device=engine.device)
        report.oom_real = True
    else:
        injected = _injected_oom(engine)
    lie = FixedBudget(64 << 30)
    try:
        with injected:
            async with _worker(config, url, engine, lie) as worker, \
                    AsyncClient(config, redis_url=url) as client:
                jobs = [await client.chat("llm", [{"role": "user", "content": t * 8}],
                                          max_tokens=options.max_tokens, temperature=0)
                        for t in texts[:options.oom_jobs]]
                outcomes = [await job.outcome(timeout=600) for job in jobs]
                report.oom_events = worker.stats.oom_recoveries
                report.oom_jobs = len(jobs)
                report.oom_jobs_ok = sum(o.state.value == "succeeded" for o in outcomes) - (
                    worker.stats.duplicates)
    finally:
        del ballast
        if engine.device.startswith("cuda"):
            torch.cuda.empty_cache()


@contextmanager
def _injected_oom(engine: Any) -> Iterator[None]:
    """CPU only: the next step of more than one row raises torch's OOM, once (the model's
    forward is wrapped for the while)."""
    import torch

    model = engine.model
    original = model.forward
    fired: list[bool] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not fired and kwargs.get("past_key_values") is not None \
                and kwargs["input_ids"].shape[0] > 1:
            fired.append(True)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected on CPU)")
        return original(*args, **kwargs)

    model.forward = forward
    try:
        yield
    finally:
        del model.forward  # the class's own again


@contextmanager
def _sampling(device: str) -> Iterator[dict[str, list[Any]]]:
    """Every 50 ms: bytes torch holds beyond what it held at the start (the weights),
    and NVML's utilisation (CUDA only)."""
    import torch

    samples: dict[str, list[Any]] = {"held": [], "util": []}
    stop = threading.Event()
    cuda = device.startswith("cuda")
    base = torch.cuda.memory_allocated(device) if cuda else 0
    nvml = _nvml_handle() if cuda else None

    def sample() -> None:
        while not stop.wait(0.05):
            if cuda:
                samples["held"].append(torch.cuda.memory_allocated(device) - base)
            if nvml is not None:
                samples["util"].append(nvml[0].nvmlDeviceGetUtilizationRates(nvml[1]).gpu)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def _nvml_handle() -> tuple[Any, Any] | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no NVML here: utilisation is not reported
        return None


@asynccontextmanager
async def _worker(config: SwitchyardConfig, url: str, engine: Any,
                  probe: Any = None) -> AsyncIterator[Any]:
    from switchyard.workers.runtime import Worker

    redis = RedisSettings.from_url(url).connect()
    worker = Worker(redis, config, "llm", engine, probe=probe)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(60_000):  # until it has registered (at most 10 min)
            if await redis.zcard(f"{config.redis.prefix}:{{llm}}:workers") or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield worker
    finally:
        stop.set()
        await task
        await redis.aclose()


def render(report: GpuReport) -> str:
    util = sorted(report.utilisation)
    lines = [f"{report.model} ({report.parameters / 1e9:.2f}B parameters) on {report.device}",
             f"memory: budget {report.budget_bytes / 2**30:.2f} GiB; most held beyond the "
             "weights in any 50 ms sample " + (
                 f"{report.peak_over_weights / 2**30:.2f} GiB"
                 if report.device.startswith("cuda") else "not measured (CUDA only)"),
             "GPU utilisation at saturation: " + (
                 f"median {util[len(util) // 2]}%, max {util[-1]}% ({len(util)} samples)"
                 if util else "not measured (no NVML)"),
             f"{'concurrency':>12}{'queue tok/s':>13}{'TTFT p50':>10}{'generate tok/s':>16}"
             f"{'generate_batch':>16}{'queue/generate':>16}"]
    for r in report.rows:
        lines.append(f"{r['concurrency']:>12.0f}{r['queue_tokens_per_s']:>13,.1f}"
                     f"{r['ttft_p50_ms']:>8.1f}ms{r.get('bare_tokens_per_s', 0):>16,.1f}"
                     f"{r.get('generate_batch_tokens_per_s', 0):>16,.1f}"
                     f"{r['queue_tokens_per_s'] / max(1e-9, r.get('bare_tokens_per_s', 0)):>16.3f}")
    lines.append(f"OOM ({'real, ballast' if report.oom_real else 'injected: CPU'}): "
                 f"{report.oom_events} events, {report.oom_jobs_ok}/{report.oom_jobs} jobs "
                 "succeeded once")
    lines.append(json.dumps(asdict(report)))
    return "\n".join(lines)
