"""Pins the exported names (the root ``switchyard`` and each package), and keeps torch out
of the core packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

import switchyard
from switchyard import broker, dispatcher, workers


def test_root_exports_the_enqueue_api() -> None:
    assert sorted(switchyard.__all__) == [
        "AdmissionRejected", "AsyncClient", "AsyncJob", "BrokerUnavailable", "ChatResult",
        "Client", "ClientError", "DurabilityUnavailable", "EmbedResult", "InvalidRequest",
        "Job", "JobCancelled", "JobError", "JobExpired", "JobFailed", "JobNotFound",
        "ResultTimeout", "SwitchyardConfig", "SwitchyardError", "UnknownModel", "load_config",
    ]
    for name in switchyard.__all__:  # the same objects as in their own packages
        home = dispatcher if name in dispatcher.__all__ else broker
        assert getattr(switchyard, name) is getattr(home, name), name
    assert set(switchyard.__all__) <= set(dir(switchyard))
    with pytest.raises(AttributeError, match="no attribute 'Worker'"):
        _ = switchyard.Worker  # type: ignore[attr-defined]


def test_dispatcher_exports() -> None:
    assert sorted(dispatcher.__all__) == [
        "AdmissionRejected", "AsyncClient", "AsyncJob", "Client", "ClientError",
        "InvalidRequest", "Job", "JobCancelled", "JobError", "JobExpired", "JobFailed",
        "JobNotFound", "ResultTimeout", "UnknownModel",
    ]


def test_broker_and_workers_exports_resolve() -> None:
    for module in (broker, dispatcher, workers):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert {"SwitchyardError", "Keys", "Scripts", "JobOutcome", "load_config", "ChatResult",
            "ChatRequest", "EmbedResult", "BrokerUnavailable",
            "DurabilityUnavailable"} <= set(broker.__all__)
    assert {"Worker", "Engine", "build_engine", "EchoEngine"} <= set(workers.__all__)


def test_every_error_descends_from_the_root() -> None:
    for module in (broker, dispatcher, workers):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, Exception):
                assert issubclass(obj, broker.SwitchyardError), name


def test_core_packages_never_import_torch() -> None:
    code = ("import sys, switchyard.broker, switchyard.dispatcher, switchyard.workers\n"
            "import switchyard.ops.cli\n"
            "from switchyard import Client\n"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""
