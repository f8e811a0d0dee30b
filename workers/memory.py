"""How much memory a worker's batches may use: probes, and the budget drawn from them.

Three sources, one interface (:class:`MemoryProbe`):

- :class:`NvmlProbe`: NVML through ``nvidia-ml-py`` (free and total memory, utilisation);
- :class:`TorchProbe`: ``torch.cuda.mem_get_info``, where NVML is missing;
- :class:`FixedBudget`: a configured size, for CPU workers (``--memory-budget 2GiB``).

:func:`choose_probe` picks one and never fails: on a machine without NVIDIA libraries it
falls back and says so in one log line. :class:`Budget` turns a reading into the bytes the
next batch may use: free x utilisation target - safety margin.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

from switchyard.broker.units import format_size

__all__ = ["Budget", "FixedBudget", "MemoryProbe", "MemoryReading", "NvmlProbe", "TorchProbe",
           "choose_probe"]

log = logging.getLogger(__name__)

DEFAULT_CPU_BUDGET = 2 << 30


@dataclass(frozen=True)
class MemoryReading:
    free: int
    total: int
    utilisation: float | None = None
    """GPU busy fraction over the last sample period (NVML only)."""


class MemoryProbe(Protocol):
    source: str

    def read(self) -> MemoryReading: ...


class FixedBudget:
    source = "budget"

    def __init__(self, size: int) -> None:
        self._size = size

    def read(self) -> MemoryReading:
        return MemoryReading(self._size, self._size)


class TorchProbe:
    source = "torch"

    def __init__(self, device: str) -> None:
        import torch

        self._torch: Any = torch
        self._device = device

    def read(self) -> MemoryReading:
        free, total = self._torch.cuda.mem_get_info(self._device)
        # What torch holds cached but unused is ours to use as well.
        cached = self._torch.cuda.memory_reserved(self._device) - self._torch.cuda.memory_allocated(
            self._device)
        return MemoryReading(int(free + cached), int(total))


class NvmlProbe:
    source = "nvml"

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml: Any = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> MemoryReading:
        memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
        return MemoryReading(int(memory.free), int(memory.total), rates.gpu / 100.0)


def _physical_index(device: str) -> int:
    """cuda:N is the Nth visible device; NVML counts physical ones."""
    logical = int(device.partition(":")[2] or 0)
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and logical < len(visible) and visible[logical].strip().isdigit():
        return int(visible[logical])
    return logical


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_probe(device: str, budget: int | None = None) -> MemoryProbe:
    """A fixed budget when one is given or the device is not CUDA; else NVML, else torch."""
    probe: MemoryProbe
    if budget is not None or not device.startswith("cuda"):
        probe = FixedBudget(budget if budget is not None else DEFAULT_CPU_BUDGET)
        log.info("memory: fixed budget of %s for %s", format_size(probe.read().total), device)
        return probe
    try:
        probe = NvmlProbe(_physical_index(device))
    except Exception as exc:  # no driver, no library, no such device: fall back
        why = f"{type(exc).__name__}: {exc}"
        if _torch_cuda():
            log.info("memory: NVML unavailable (%s); torch.cuda.mem_get_info for %s", why, device)
            return TorchProbe(device)
        log.info("memory: neither NVML (%s) nor CUDA here; fixed budget of %s for %s", why,
                 format_size(DEFAULT_CPU_BUDGET), device)
        return FixedBudget(DEFAULT_CPU_BUDGET)
    reading = probe.read()
    log.info("memory: NVML for %s, %s free of %s", device, format_size(reading.free),
             format_size(reading.total))
    return probe


@dataclass
class Budget:
    """Bytes the next batch may use: free x ``target`` - ``margin`` (a fixed budget is
    used as it is)."""

    probe: MemoryProbe
    target: float = 0.9
    margin: int = 256 << 20
    last: MemoryReading | None = None
    """The reading the last :meth:`bytes` used."""

    def bytes(self) -> int:
        reading = self.last = self.probe.read()
        if self.probe.source == FixedBudget.source:
            return reading.free
        return max(0, int(reading.free * self.target) - self.margin)
