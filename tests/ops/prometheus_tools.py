"""Where the real Prometheus tools are: Debian's ``prometheus`` package, which `make test`
installs where missing. Under ``CI=true`` a missing tool fails the test (CI must run
it); elsewhere it is skipped with the reason."""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["tool"]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        why = (f"{name} is not installed (Debian's prometheus package; `make test` "
               "installs it)")
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return path
