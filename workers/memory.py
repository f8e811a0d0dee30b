"""How much memory a worker's batches may use: probes, and the budget drawn from them.

Three sources, one interface (:class:`MemoryProbe`):

- :class:`NvmlProbe`: NVML through ``nvidia-ml-py`` (free and total memory, utilisation),
  the GPU matched by UUID;
- :class:`TorchProbe`: ``torch.cuda.mem_get_info``, where NVML is missing;

Both count what torch's allocator caches but does not use as free (it is this process's
to use; the driver counts it as taken).
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
           "choose_probe", "nvml_handle"]

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

    def __init__(self, device: str, torch: Any = None) -> None:
        if torch is None:
            import torch as torch_module

            torch = torch_module
        self._torch: Any = torch
        self._device = device

    def read(self) -> MemoryReading:
        free, total = self._torch.cuda.mem_get_info(self._device)
        return MemoryReading(int(free + _cached(self._torch, self._device)), int(total))


def _cached(torch: Any, device: str) -> int:
    """Bytes torch's allocator holds but does not use: free to this process, though the
    driver counts them as taken."""
    if torch is None or not device.startswith("cuda"):
        return 0
    return int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


class NvmlProbe:
    """NVML's reading of the GPU behind ``device``, matched by UUID (``CUDA_VISIBLE_DEVICES``
    may hold indices in another order than NVML's, UUIDs or MIG ids). Utilisation is left
    out where NVML does not support it (MIG, vGPU); an NVML error in a read falls back to
    the last good reading (logged once), so neither start-up nor the heartbeat dies of it."""

    source = "nvml"

    def __init__(self, device: str, nvml: Any = None, torch: Any = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        nvml.nvmlInit()
        self._nvml: Any = nvml
        self._torch = torch
        self._device = device
        self._handle = nvml_handle(nvml, device, torch)
        self._utilisation = True
        self._last: MemoryReading | None = None
        self._failing = False
        self.name = str(_text(nvml.nvmlDeviceGetUUID(self._handle)))

    def read(self) -> MemoryReading:
        try:
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        except Exception as exc:  # NVMLError and its many subclasses
            if self._last is None:
                raise
            if not self._failing:
                log.warning("memory: NVML read failed (%s); using the last reading", exc)
            self._failing = True
            return self._last
        self._failing = False
        self._last = MemoryReading(int(memory.free) + _cached(self._torch, self._device),
                                   int(memory.total), self._busy())
        return self._last

    def _busy(self) -> float | None:
        if not self._utilisation:
            return None
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu) / 100.0
        except Exception as exc:  # NotSupported on MIG and vGPU: stop asking
            self._utilisation = False
            log.info("memory: no GPU utilisation from NVML here (%s)", exc)
            return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_handle(nvml: Any, device: str, torch: Any = None) -> Any:
    """NVML's handle for ``cuda:N``: by the UUID torch reports for it, else by the
    ``CUDA_VISIBLE_DEVICES`` entry (a UUID or MIG id as it is, an index as an index)."""
    logical = int(device.partition(":")[2] or 0)
    if torch is not None and torch.cuda.is_available():
        uuid = str(torch.cuda.get_device_properties(logical).uuid)
        for name in (uuid, f"GPU-{uuid}", f"MIG-{uuid}"):
            try:
                return nvml.nvmlDeviceGetHandleByUUID(name)
            except Exception:  # not that spelling
                continue
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if v.strip()]
    entry = visible[logical] if logical < len(visible) else str(logical)
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    return nvml.nvmlDeviceGetHandleByUUID(entry)


def _torch_module() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def choose_probe(device: str, budget: int | None = None) -> MemoryProbe:
    """A fixed budget when one is given or the device is not CUDA; else NVML, else torch."""
    probe: MemoryProbe
    if budget is not None or not device.startswith("cuda"):
        probe = FixedBudget(budget if budget is not None else DEFAULT_CPU_BUDGET)
        log.info("memory: fixed budget of %s for %s", format_size(probe.read().total), device)
        return probe
    torch = _torch_module()
    try:
        probe = NvmlProbe(device, torch=torch)
        reading = probe.read()
    except Exception as exc:  # no driver, no library, no such device: fall back
        why = f"{type(exc).__name__}: {exc}"
        if torch is not None:
            log.info("memory: NVML unavailable (%s); torch.cuda.mem_get_info for %s", why, device)
            return TorchProbe(device, torch)
        log.info("memory: neither NVML (%s) nor CUDA here; fixed budget of %s for %s", why,
                 format_size(DEFAULT_CPU_BUDGET), device)
        return FixedBudget(DEFAULT_CPU_BUDGET)
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

    def bytes(self, held: int = 0) -> int:
        """``held``: bytes this worker's running batches hold now. A probe's free memory
        has them taken out already; they are part of what this worker may use, so they
        count back in (the caller charges its running batches against the result). A
        fixed budget is the whole budget either way."""
        reading = self.last = self.probe.read()
        if self.probe.source == FixedBudget.source:
            return reading.free
        return max(0, int((reading.free + held) * self.target) - self.margin)
