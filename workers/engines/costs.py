"""What one padded token of a batch costs in device memory, per model, and the engines'
shared handling of running out of it.

- Causal LMs: the KV cache, 2 x layers x kv_heads x head_dim x dtype bytes per token, plus
  an activation term.
- Encoders: the activation term alone.

The activation term is measured at warm-up on CUDA (peak allocated during a batch of
known size, less what was there before, less the KV cache, per token). On CPU, where
torch reports no peak, it is estimated as dtype bytes x (4 x hidden + intermediate): the
few hidden-size buffers and the MLP's widening of one layer, which inference frees layer
by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchyard.workers.errors import DeviceLost, OutOfMemory

__all__ = ["activation_estimate", "free_memory", "guard_oom", "is_alloc_failure",
           "is_device_lost", "kv_bytes_per_token", "measure_activation"]

ALLOC_FAILURES = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                  "CUDA error: out of memory", "HIP out of memory")
"""Errors other than ``torch.cuda.OutOfMemoryError`` that mean the same: a library's own
workspace allocation failed."""
STICKY = ("device-side assert triggered", "an illegal memory access was encountered",
          "unspecified launch failure", "uncorrectable ECC error", "misaligned address",
          "CUDA error: unknown error", "GPU is lost", "Xid", "CUDA driver version is insufficient",
          "CUDA-capable device(s) is/are busy or unavailable", "illegal instruction")
"""CUDA errors after which the context is unusable: every later call fails the same way."""


def _dtype_bytes(model: Any) -> int:
    return int(next(model.parameters()).element_size())


def kv_bytes_per_token(model: Any) -> int:
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return int(2 * config.num_hidden_layers * kv_heads * head_dim * _dtype_bytes(model))


def activation_estimate(model: Any) -> int:
    config = model.config
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    return int(_dtype_bytes(model) * (4 * config.hidden_size + intermediate))


def measure_activation(torch: Any, device: str, run: Callable[[], object], tokens: int,
                       kv_per_token: int = 0) -> int | None:
    """Peak bytes per token of ``run`` (which processes ``tokens`` padded tokens) beyond
    the KV cache, on CUDA; None elsewhere."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    return max(0, int(peak / tokens) - kv_per_token)


def is_alloc_failure(torch: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is running out of device memory (cuBLAS's and cuDNN's included)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in ALLOC_FAILURES)


def is_device_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a sticky CUDA error (see ``STICKY``)."""
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in STICKY)


def guard_oom(torch: Any, device: str, work: Callable[[], Any]) -> Any:
    """Run ``work``; running out of memory becomes :class:`OutOfMemory`, raised with no
    traceback or cause: the failed call's frames (and the tensors they hold) are freed
    as soon as the caller drops its own references, then :func:`free_memory`. A sticky
    CUDA error becomes :class:`DeviceLost`."""
    try:
        return work()
    except BaseException as exc:  # re-raised unless it is an OOM or a lost device
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if is_device_lost(exc):
            raise DeviceLost(f"{device} is unusable: {first}") from None
        if not is_alloc_failure(torch, exc):
            raise
        message = f"out of memory on {device}: {first}"
    free_memory(torch, device)
    raise OutOfMemory(message)


def free_memory(torch: Any, device: str) -> None:
    """Collect what the failed work left (cycles included) and hand the allocator's
    cached blocks back, so the retry starts from what is really in use."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
