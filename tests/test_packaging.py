"""The distribution: one top-level package (``switchyard``), a wheel that works from a clean
venv, and the checks in ``make lint`` (import-linter, mypy) that really look at the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.test_cli import up_serves_a_job

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("broker", "dispatcher", "workers", "ops")


def copy_tree(dest: Path) -> Path:
    """The repository's files as a clean clone has them (tracked, plus new files not yet
    committed; symbolic links kept as links) copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        source, target = ROOT / name, dest / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the work tree, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "REDIS_URL")}


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A wheel built from a copy of the tree, installed (with its dependencies from the
    index, as a user would) into a new venv: (wheel, venv)."""
    base = tmp_path_factory.mktemp("wheel")
    tree = copy_tree(base / "tree")
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(base / "dist"), str(tree)], check=True, env=env, timeout=300)
    (wheel,) = (base / "dist").glob("switchyard-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, env=env, timeout=600)
    yield wheel, venv


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(wheel_venv: tuple[Path, Path]) -> None:
    wheel, venv = wheel_venv
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"switchyard", wheel.name.split("-py3")[0]
                                                + ".dist-info"}
    assert sum(n.startswith("switchyard/broker/lua/") and n.endswith(".lua") for n in names) \
        == len(list((ROOT / "broker" / "lua").glob("*.lua")))
    for package in ("", *(f"{f}/" for f in FOLDERS)):
        assert f"switchyard/{package}py.typed" in names
    (info,) = (venv / "lib").glob("python3*/site-packages/switchyard-*.dist-info")
    assert (info / "top_level.txt").read_text().split() == ["switchyard"]
    for name in FOLDERS:  # nothing of ours under a generic name, from anywhere
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {name}"],
                               cwd=venv, capture_output=True, text=True, env=_clean_env())
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


@pytest.mark.slow
def test_switchyard_up_from_the_wheel_serves_a_job(
    wheel_venv: tuple[Path, Path], tmp_path: Path, prefix: str
) -> None:
    _, venv = wheel_venv
    up_serves_a_job([str(venv / "bin" / "switchyard")], tmp_path, prefix,
                    gateway=False)  # the core install: no gateway extra


@pytest.mark.slow
def test_the_dockerfile_copies_what_the_build_needs(tmp_path: Path) -> None:
    """The image's ``pip install .`` sees only what the Dockerfile COPYs (no Docker engine
    here): a wheel built from exactly those paths holds the whole package."""
    tree = copy_tree(tmp_path / "tree")
    context = tmp_path / "context"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                path = tree / source
                if path.is_dir():
                    shutil.copytree(path, context / source, symlinks=True)
                else:
                    context.mkdir(exist_ok=True)
                    shutil.copy2(path, context / source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(context)], check=True, env=_clean_env(),
                   timeout=300)
    (wheel,) = (tmp_path / "dist").glob("switchyard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"switchyard/{p.relative_to(ROOT).as_posix()}"
                for folder in FOLDERS for p in (ROOT / folder).rglob("*")
                if p.suffix in (".py", ".lua", ".typed") and "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)


def test_workers_start_without_dispatcher_or_ops() -> None:
    """``python -m switchyard.workers`` (what supervisors run) loads neither the enqueue API
    nor the ops CLI, even through the root package's re-exports."""
    code = ("import sys, runpy\n"
            "sys.argv = ['x', '--help']\n"
            "try:\n    runpy.run_module('switchyard.workers', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[1] for m in sys.modules "
            "if m.startswith('switchyard.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "['broker', 'workers']"


@pytest.mark.parametrize(("module", "line"), [
    ("broker/keys.py", "import switchyard.ops.cli"),                 # broker reaches up
    ("dispatcher/portal.py", "import switchyard.workers.runtime"),   # siblings
    ("workers/periodic.py", "import switchyard.dispatcher.client"),  # siblings
    ("workers/periodic.py", "import switchyard.ops.status"),         # nobody imports ops
    ("broker/keys.py", "import torch"),                              # the light path
])
def test_import_linter_fails_on_a_planted_import(tmp_path: Path, module: str, line: str) -> None:
    tree = copy_tree(tmp_path / "tree")
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None
    env = {**_clean_env(), "PYTHONPATH": str(tree / "src")}
    clean = subprocess.run([lint, "--no-cache"], cwd=tree, env=env, capture_output=True,
                           text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout
    with (tree / module).open("a") as f:
        f.write(f"\n{line}  # planted\n")
    planted = subprocess.run([lint, "--no-cache"], cwd=tree, env=env, capture_output=True,
                             text=True, timeout=120)
    assert planted.returncode != 0 and "BROKEN" in planted.stdout
    assert f"-> {line.split()[1]}" in planted.stdout, planted.stdout


def test_mypy_checks_the_folders_as_switchyard_packages(tmp_path: Path) -> None:
    """mypy finds ``switchyard.broker`` in the folders themselves (src/ holds links to them),
    so a type error in an installed-name import is reported, not skipped as missing."""
    planted = tmp_path / "planted.py"
    planted.write_text("from switchyard.broker.units import format_size\n"
                       "from switchyard.workers.cli import worker_command\n"
                       "size: int = format_size(1)\n"
                       "command: str = worker_command('echo')\n")
    out = subprocess.run([sys.executable, "-m", "mypy", str(planted)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout
    assert out.stdout.count("Incompatible types in assignment") == 2, out.stdout
    assert "import-not-found" not in out.stdout and "import-untyped" not in out.stdout
