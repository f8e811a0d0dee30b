"""NVML on the hosts it meets (issue 17, fix 3), without a GPU: a fake ``pynvml`` module
with two GPUs, one of them a MIG slice (no utilisation), whose reads can be made to fail."""

from __future__ import annotations

import types
from types import SimpleNamespace
from typing import Any

import pytest

from switchyard.broker.keys import Keys
from switchyard.workers.heartbeat import Heartbeat
from switchyard.workers.memory import NvmlProbe, choose_probe, nvml_handle

GIB = 1 << 30


class NVMLError(Exception):
    pass


class NVMLErrorNotSupported(NVMLError):
    pass


def fake_nvml(failing: dict[str, bool] | None = None) -> Any:
    """NVML's order: index 0 is GPU-aaa (a full GPU), index 1 is MIG-bbb (no utilisation)."""
    gpus = {"GPU-aaa": (10 * GIB, 80 * GIB), "MIG-bbb": (3 * GIB, 20 * GIB)}
    order = list(gpus)
    failing = failing if failing is not None else {}

    def memory(handle: str) -> Any:
        if failing.get("memory"):
            raise NVMLError("GPU is lost")
        free, total = gpus[handle]
        return SimpleNamespace(free=free, total=total, used=total - free)

    def utilisation(handle: str) -> Any:
        if handle.startswith("MIG-"):
            raise NVMLErrorNotSupported("Not Supported")
        return SimpleNamespace(gpu=42, memory=10)

    def by_uuid(uuid: str) -> str:
        if uuid not in gpus:
            raise NVMLError("Not Found")
        return uuid

    module = types.ModuleType("pynvml")
    module.__dict__.update(
        NVMLError=NVMLError, nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: order[i], nvmlDeviceGetHandleByUUID=by_uuid,
        nvmlDeviceGetUUID=lambda h: h.encode(), nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetUtilizationRates=utilisation)
    return module


class FakeTorch:
    """What the probes ask torch: a GPU's UUID, and its allocator's cached bytes."""

    def __init__(self, uuid: str, reserved: int, allocated: int) -> None:
        props = SimpleNamespace(uuid=uuid)
        self.cuda = SimpleNamespace(
            is_available=lambda: True, get_device_properties=lambda i: props,
            memory_reserved=lambda d: reserved, memory_allocated=lambda d: allocated)


def test_a_mig_slice_without_utilisation_starts_and_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_nvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-bbb")
    probe = choose_probe("cuda:0")  # used to raise NotSupported at start-up
    assert probe.source == "nvml"
    reading = probe.read()
    assert (reading.free, reading.total, reading.utilisation) == (3 * GIB, 20 * GIB, None)


def test_gpus_are_matched_by_uuid_not_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-bbb,GPU-aaa")
    assert nvml_handle(nvml, "cuda:0") == "MIG-bbb"
    assert nvml_handle(nvml, "cuda:1") == "GPU-aaa"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert nvml_handle(nvml, "cuda:0") == "MIG-bbb"
    # torch's UUID for the device wins over any order (CUDA may enumerate fastest first)
    assert nvml_handle(nvml, "cuda:0", FakeTorch("aaa", 0, 0)) == "GPU-aaa"


def test_torch_cached_but_unused_memory_counts_as_free() -> None:
    probe = NvmlProbe("cuda:0", fake_nvml(), FakeTorch("aaa", reserved=6 * GIB,
                                                        allocated=2 * GIB))
    reading = probe.read()
    assert reading.free == 10 * GIB + 4 * GIB and reading.utilisation == 0.42


async def test_an_nvml_error_keeps_the_last_reading_and_the_heartbeat_beats(
        aredis: Any, prefix: str) -> None:
    failing: dict[str, bool] = {}
    probe = NvmlProbe("cuda:0", fake_nvml(failing))
    good = probe.read()
    failing["memory"] = True
    assert probe.read() == good

    def vitals() -> dict[str, str]:
        raise NVMLError("Unknown Error")  # what a refresh without the fallback met

    keys = Keys(prefix).pool("llm")
    beat = Heartbeat(aredis, keys, "w1", {"engine": "generate"}, interval_s=0.1, ttl_s=2,
                     refresh=vitals)
    await beat.beat()
    assert await aredis.hget(keys.worker("w1"), "engine") == "generate"
    assert await aredis.zscore(keys.workers, "w1") is not None
