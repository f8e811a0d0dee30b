"""The ``generate`` engine: chat generation with a transformers causal LM.

The model is a local folder (weights and tokenizer) or ``builtin:tiny-llama``. Chat
messages go through the tokenizer's chat template where it has one (plain
``role: content`` lines otherwise). Requests are decoded by one running batch
(:class:`switchyard.workers.engines.joining.DecodeLoop`): left-padded, KV-cached, each job with its
own sampling parameters and seed, text streamed as it settles; a worker's new batch joins
the running one at its next step (continuous batching), so the worker keeps pulling
while generation runs. The worker packs batches of similar total length (prompt +
``max_tokens``), the cost this engine declares.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from switchyard.broker.schemas import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    ErrorInfo,
    JobEnvelope,
    ServedBy,
)
from switchyard.broker.schemas import Usage as UsageInfo
from switchyard.workers.engines.base import Emit, EngineOutput
from switchyard.workers.engines.costs import (
    activation_estimate,
    free_memory,
    guard_oom,
    kv_bytes_per_token,
    measure_activation,
)
from switchyard.workers.engines.decoding import Decoded, Prompt
from switchyard.workers.engines.embed import pick_device, pick_dtype
from switchyard.workers.engines.joining import DecodeLoop
from switchyard.workers.engines.tiny_llama import BUILTINS, build_tiny_llama
from switchyard.workers.errors import EngineUnavailable, OutOfMemory

__all__ = ["GenerateEngine"]


class GenerateEngine:
    name = "generate"
    joins = True
    tokenises = True

    def __init__(self, model: str, device: str = "auto", max_input_tokens: int = 1024,
                 dtype: str = "auto") -> None:
        try:
            import torch
        except ImportError as exc:
            raise EngineUnavailable(
                "the generate engine needs torch and transformers: pip install 'switchyard[gpu]'"
            ) from exc
        self.device = pick_device(torch, device)
        self._torch: Any = torch
        self._model, self._tokenizer = _load(model, self.device)
        self.dtype = pick_dtype(torch, self.device, dtype)
        self._model.to(self.device, getattr(torch, self.dtype))
        check_cache_layout(torch, self._model, model, self.device)
        self._kv = self.cache_bytes = kv_bytes_per_token(self._model)
        self.token_bytes = self._kv + activation_estimate(self._model)
        self._max_input = max_input_tokens
        self._context = int(getattr(self._model.config, "max_position_embeddings", 0) or 1 << 30)
        self.out_of_memory: Callable[[OutOfMemory], None] = lambda exc: None
        """Told of every out-of-memory event (see ``ReportsOutOfMemory``)."""
        self._loop = DecodeLoop(self._model, self._tokenizer, self.device,
                                lambda work: guard_oom(torch, self.device, work),
                                lambda: free_memory(torch, self.device),
                                lambda exc: self.out_of_memory(exc))

    def held_bytes(self) -> int:
        return self._loop.slots * self.cache_bytes

    @property
    def model(self) -> Any:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    async def warmup(self) -> None:
        prompt = Prompt(self._tokenizer("warm-up")["input_ids"], max_tokens=2)
        await self._generate([prompt], None)
        sample = [Prompt([1] * 60, max_tokens=4)] * 4
        measured = await asyncio.to_thread(
            measure_activation, self._torch, self.device,
            lambda: self._loop.submit(sample, None).result(), 4 * 64, self._kv)
        if measured is not None:
            self.token_bytes = self._kv + measured

    def prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        tokenizer = self._tokenizer
        plain = [{"role": m.role, "content": m.content} for m in messages]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant: "
        return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        request = job.request
        assert isinstance(request, ChatRequest)
        return 1, len(self.prompt_ids(request.messages)) + request.max_tokens

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        outputs: list[EngineOutput | None] = [None] * len(jobs)
        prompts: list[Prompt] = []
        rows: list[int] = []
        # Tokenised off the event loop: a long prompt would hold up heartbeats.
        all_ids = await asyncio.to_thread(lambda: [
            self.prompt_ids(j.request.messages) if isinstance(j.request, ChatRequest) else []
            for j in jobs])
        for i, (job, ids) in enumerate(zip(jobs, all_ids, strict=True)):
            request = job.request
            if not isinstance(request, ChatRequest):
                outputs[i] = ErrorInfo(code="bad_request", message="the generate engine serves "
                                       "chat requests only")
                continue
            problem = self._too_long(len(ids), request.max_tokens)
            if problem:
                outputs[i] = ErrorInfo(code="context_length_exceeded", message=problem)
                continue
            # An unseeded job is seeded from its id: a batch run again after running out of
            # memory (or redelivered) produces the same text it already streamed.
            seed = request.seed if request.seed is not None else zlib.crc32(job.id.encode())
            prompts.append(Prompt(ids, request.max_tokens, request.temperature, request.top_p,
                                  tuple(request.stop), seed, request.stream, job.id))
            rows.append(i)
        if prompts:
            decoded = await self._generate(prompts, lambda row, text: emit(rows[row], text))
            for i, result in zip(rows, decoded, strict=True):
                outputs[i] = _result(result, jobs[i], served_by)
        return [o for o in outputs if o is not None]

    def _too_long(self, prompt_tokens: int, max_tokens: int) -> str:
        if prompt_tokens > self._max_input:
            return (f"the prompt is {prompt_tokens} tokens; this pool takes at most "
                    f"{self._max_input} (max_input_tokens)")
        if prompt_tokens + max_tokens > self._context:
            return (f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the "
                    f"model's context of {self._context} tokens")
        return ""

    async def _generate(self, prompts: list[Prompt], emit: Emit | None) -> list[Decoded]:
        """Decode in the running batch (raises OutOfMemory if it ran out)."""
        return await asyncio.wrap_future(self._loop.submit(prompts, emit))

    def close(self) -> None:
        self._loop.close()


def _result(decoded: Decoded, job: JobEnvelope, served_by: ServedBy) -> ChatResult:
    ttft = None if decoded.first_token_ms is None else float(
        max(0, decoded.first_token_ms - job.created_ms))
    return ChatResult(
        text=decoded.text,
        finish_reason="stop" if decoded.finish_reason == "stop" else "length",
        usage=UsageInfo(input_tokens=decoded.prompt_tokens,
                        output_tokens=decoded.completion_tokens),
        ttft_ms=ttft, served_by=served_by,
    )


def check_cache_layout(torch: Any, model: Any, name: str, device: str) -> None:
    """Refuse a model whose KV cache the joiner cannot merge, pad and trim: it needs every
    layer to be a plain full-attention cache (``DynamicLayer``). Sliding-window layers
    (Mistral with ``sliding_window``, Gemma 2/3) drop old columns on their own, and hybrid
    models (Mamba, Jamba) keep state that is not per-column; both would decode wrong."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([[1, 2, 3]], device=device), use_cache=True,
                    logits_to_keep=1)
    layers = getattr(out.past_key_values, "layers", None)
    kinds = sorted({type(layer).__name__ for layer in layers or ()}) or [
        type(out.past_key_values).__name__]
    if kinds != ["DynamicLayer"]:
        raise EngineUnavailable(
            f"model {name} keeps a {'/'.join(kinds)} cache (sliding-window or hybrid "
            "attention); the generate engine can batch only full-attention models. Serve it "
            "from vLLM or SGLang behind a pool with engine = \"served\"")


def _load(model: str, device: str) -> tuple[Any, Any]:
    if model in BUILTINS:
        return build_tiny_llama(**BUILTINS[model], device=device)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise EngineUnavailable(f"no model folder at {path} (expected a config.json there); "
                                f"or use one of {', '.join(BUILTINS)}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    causal_lm: Any = AutoModelForCausalLM.from_pretrained(str(path))
    causal_lm.eval()
    return causal_lm, tokenizer
