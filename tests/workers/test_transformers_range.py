"""The lowest transformers the ``generate`` engine supports (pyproject's lower bound) runs
the decode loop's tests as the pinned one does. ``make test`` installs it into
``.venv/transformers-lower``; this test puts that folder first on the path of a pytest run
of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOWER = Path(sys.prefix) / "transformers-lower"
SUITES = ["tests/workers/test_decoding.py", "tests/workers/test_oom_recovery.py",
          "tests/workers/test_accounting.py"]


def _lower_bound() -> str:
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["gpu"]
    spec = next(d for d in gpu if d.startswith("transformers"))
    return spec.split(">=")[1].split(",")[0]


def test_the_decode_loop_runs_on_the_lowest_supported_transformers() -> None:
    assert (LOWER / "transformers").is_dir(), f"run `make test` first: {LOWER} is missing"
    env = {**os.environ, "PYTHONPATH": str(LOWER)}
    version = subprocess.run(
        [sys.executable, "-c", "import transformers; print(transformers.__version__)"],
        env=env, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert version.startswith(_lower_bound()), (version, _lower_bound())
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *SUITES], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
