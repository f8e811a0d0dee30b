"""Pins the exported names, and keeps torch out of the core packages."""

from __future__ import annotations

import subprocess
import sys

import broker
import dispatcher
import workers


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
    code = ("import sys, broker, dispatcher, workers, ops.cli\n"
            "from dispatcher import Client\n"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""
