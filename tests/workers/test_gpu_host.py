"""What a GPU host runs: the per-GPU supervisor, the worker CLI's flags, metrics, status.
(No GPU here: device enumeration is given a count; the rest is real.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from switchyard.dispatcher import AsyncClient
from switchyard.ops.redis_server import free_port
from switchyard.ops.status import collect, render
from switchyard.workers.cli import WorkerOptions, child_command, child_env, gpu_devices
from switchyard.workers.engines.generate import GenerateEngine
from switchyard.workers.engines.tiny_llama import BUILTIN
from switchyard.workers.errors import EngineUnavailable
from switchyard.workers.memory import FixedBudget
from switchyard.workers.supervisor import Supervisor
from tests.conftest import StartWorker, make_config


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_supervisor_restarts_a_dead_child_with_backoff_and_stops_by_pid(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor(say=said.append, backoff_s=0.05)
    dying = supervisor.start("dies", [sys.executable, "-c", "raise SystemExit(3)"],
                             tmp_path / "dies.log")
    living = supervisor.start("lives", [sys.executable, "-c", "import time; time.sleep(60)"],
                              tmp_path / "lives.log")
    first = dying.process.pid if dying.process else None
    deadline = time.monotonic() + 10
    while dying.restarts < 2 and time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.02)
    assert dying.restarts >= 2 and dying.process is not None and dying.process.pid != first
    assert any("dies exited (3); restarting" in line for line in said)
    supervisor.stop(grace_s=5)
    assert living.process is not None and living.process.poll() is not None


def test_device_all_means_one_worker_per_visible_gpu_seeing_only_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_devices(2) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa, MIG-bbb")
    assert gpu_devices(2) == ["GPU-aaa", "MIG-bbb"]
    with pytest.raises(EngineUnavailable, match="no CUDA devices"):
        gpu_devices(0)
    args = child_command(WorkerOptions("llm", "c.toml", "all", "redis://h:1/0", 2 << 30, 9100),
                         1)
    assert args[args.index("--device") + 1] == "cuda:0"  # the one GPU it sees
    assert child_env("MIG-bbb") == {"CUDA_VISIBLE_DEVICES": "MIG-bbb"}
    assert args[args.index("--metrics-port") + 1] == "9101"
    assert args[args.index("--memory-budget") + 1] == str(2 << 30)


def test_device_all_children_see_one_gpu_each(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor really starts each child with its own CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    supervisor = Supervisor(say=lambda line: None)
    show = [sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"]
    try:
        children = [supervisor.start(f"c{i}", show, tmp_path / f"c{i}.log", env=child_env(gpu))
                    for i, gpu in enumerate(gpu_devices(2))]
        for child in children:
            assert child.process is not None
            child.process.wait(30)
    finally:
        supervisor.stop(grace_s=5)
    assert [c.log.read_text().strip() for c in children] == ["3", "5"]


@pytest.mark.parametrize("entry", ["switchyard.ops", "switchyard.workers"])
@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "all"], "no CUDA devices are visible"),
    (["--memory-budget", "lots"], "is not a size"),
])
def test_worker_cli_errors_are_one_line(entry: str, flags: list[str], message: str) -> None:
    import torch

    if flags[1] == "all" and torch.cuda.is_available():
        pytest.skip("this host has GPUs")
    out = subprocess.run([sys.executable, "-m", entry, "worker", "--pool", "echo", *flags],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


async def test_metrics_and_status_show_batches_memory_and_tokens(
    prefix: str, redis_url: str, start_worker: StartWorker, aredis: object
) -> None:
    config = make_config(prefix, llm={"engine": "generate", "model": BUILTIN, "max_batch": 8})
    engine = GenerateEngine(BUILTIN, "cpu")
    budget = 512 << 20
    worker = await start_worker(config, "llm", engine, probe=FixedBudget(budget))
    port = free_port()
    worker.metrics.serve(port, "127.0.0.1")
    async with AsyncClient(config, redis_url=redis_url) as client:
        jobs = [await client.chat("llm", [{"role": "user", "content": f"q{i}"}], max_tokens=8,
                                  temperature=0) for i in range(5)]
        tokens = sum([(await job.result(timeout=30)).usage.output_tokens for job in jobs])
        for _ in range(1_000):  # counted just after the outcomes went out
            if worker.stats.jobs == 5:
                break
            await asyncio.sleep(0.01)
        assert worker.stats.jobs == 5
        await worker._heartbeat.beat()
        pools = await collect(client.redis, config)
    try:
        text = await asyncio.to_thread(_fetch, f"http://127.0.0.1:{port}/metrics")
    finally:
        worker.metrics.close()
    samples = {line.split(" ")[0].split("{")[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line.startswith("switchyard_")}
    assert samples["switchyard_batch_size_count"] >= 1
    assert samples["switchyard_generated_tokens_total"] == tokens
    assert samples["switchyard_time_to_first_token_seconds_count"] == 5
    assert samples["switchyard_memory_budget_bytes"] == budget
    assert 'outcome="succeeded"' in text
    llm = next(p for p in pools if p.pool == "llm")
    assert llm.workers[0]["budget_bytes"] == str(budget)
    assert "memory" in render(pools) and "model builtin:tiny-llama" in render(pools)
