"""`switchyard bench queue --cluster`: burst throughput on a local Redis Cluster of 1, 2 and
3 masters (no replicas), with the same client and worker processes each time.

The echo pool has one partition per master (their hash tags put one on each: see
``broker/keys.py``). Each of ``clients`` processes submits ``jobs`` jobs from 256
producer tasks and collects every result; ``workers`` echo worker processes serve them.
Throughput is all jobs over the time from the first submit to the last result. Each
process's CPU time (user + system, from ``/proc``) is read before and after, so the
report shows which process was the bottleneck, and Redis CPU per job on each master.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from switchyard.broker.config import load_config
from switchyard.broker.schemas import EmbedResult
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.ops.processes import WorkerProcess
from switchyard.ops.redis_cluster import RedisCluster

__all__ = ["ClusterBenchOptions", "ClusterRow", "render", "run_cluster_bench"]

CONFIG = """
[redis]
prefix = "sycluster"
[pools.echo]
engine = "echo"
max_batch = 100
partitions = {partitions}
admission_control = false
[pools.echo.caps]
standard = 10000000
[models.echo]
pool = "echo"
"""
PAYLOAD = "the quick brown fox jumps over the lazy dog " * 2
PRODUCERS = 256


@dataclass(frozen=True)
class ClusterBenchOptions:
    masters: tuple[int, ...] = (1, 2, 3)
    jobs: int = 20_000
    """Per client process."""
    clients: int = 2
    workers: int = 2


@dataclass(frozen=True)
class ClusterRow:
    masters: int
    jobs_per_s: float
    cpu_s: dict[str, float]
    """CPU seconds of each process over the burst: ``client N``, ``worker N``, ``redis N``."""
    redis_us_per_job: list[float]
    """Each master's CPU per job it held (its partition's share of the jobs)."""
    wall_s: float


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(config_path: str, url: str, jobs: int, go: float, out: Connection) -> None:
    """One client process: wait until ``go`` (so all start together), then the burst."""
    async def burst() -> tuple[float, float, float]:
        config = load_config(config_path)
        async with AsyncClient(config, redis_url=url) as client:
            await client.embed("echo", "warm")  # connections and scripts, before the clock
            slots: list[AsyncJob[EmbedResult] | None] = [None] * jobs
            await asyncio.sleep(max(0.0, go - time.time()))
            start, cpu0 = time.time(), _cpu_s(os.getpid())

            async def produce(first: int) -> None:
                for i in range(first, jobs, PRODUCERS):
                    slots[i] = await client.embed("echo", PAYLOAD)

            await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))
            for job in slots:
                assert job is not None
                await job.result(timeout=600)
            return start, time.time(), _cpu_s(os.getpid()) - cpu0

    out.send(asyncio.run(burst()))
    out.close()


def _one(masters: int, options: ClusterBenchOptions, folder: Path) -> ClusterRow:
    config_path = folder / f"cluster{masters}.toml"
    config_path.write_text(CONFIG.format(partitions=masters))
    config = load_config(config_path)
    spawn = multiprocessing.get_context("spawn")
    with RedisCluster(folder / f"c{masters}", masters=masters, replicas=0) as cluster:
        workers = [WorkerProcess("echo", cluster.url, config_path, config,
                                 log=folder / f"w{masters}-{i}.log")
                   for i in range(options.workers)]
        for worker in workers:
            worker.start()
        try:
            go = time.time() + 5.0  # the clients' imports and warm-up done by then
            pipes, procs = [], []
            for _ in range(options.clients):
                receive, send = spawn.Pipe(duplex=False)
                proc = spawn.Process(target=_client, args=(
                    str(config_path), cluster.url, options.jobs, go, send))
                proc.start()
                pipes.append(receive)
                procs.append(proc)
            pids = {f"worker {i}": w.process.pid for i, w in enumerate(workers)
                    if w.process is not None}
            pids.update({f"redis {i}": n.process.pid for i, n in enumerate(cluster.nodes)
                         if n.process is not None})
            time.sleep(max(0.0, go - time.time()))
            before = {name: _cpu_s(pid) for name, pid in pids.items()}
            results = [pipe.recv() for pipe in pipes]
            after = {name: _cpu_s(pid) for name, pid in pids.items()}
            for proc in procs:
                proc.join(30)
        finally:
            for worker in workers:
                worker.stop()
    start = min(r[0] for r in results)
    wall = max(r[1] for r in results) - start
    cpu = {name: round(after[name] - before[name], 2) for name in pids}
    cpu.update({f"client {i}": round(r[2], 2) for i, r in enumerate(results)})
    total = options.jobs * options.clients
    per_master = [round(cpu[f"redis {i}"] / (total / masters) * 1e6, 1) for i in range(masters)]
    return ClusterRow(masters, round(total / wall), cpu, per_master, round(wall, 2))


def run_cluster_bench(options: ClusterBenchOptions) -> list[ClusterRow]:
    with tempfile.TemporaryDirectory(prefix="switchyard-cluster-bench-") as tmp:
        return [_one(m, options, Path(tmp)) for m in options.masters]


def render(rows: Sequence[ClusterRow], options: ClusterBenchOptions) -> str:
    lines = [f"burst on a Redis Cluster: {options.clients} client processes x {options.jobs} "
             f"echo jobs ({PRODUCERS} producers each), {options.workers} worker processes, "
             "one partition per master, no replicas:"]
    base = rows[0].jobs_per_s if rows else 1.0
    for row in rows:
        busiest = max(row.cpu_s, key=lambda name: row.cpu_s[name])
        lines.append(
            f"  {row.masters} master(s): {row.jobs_per_s:>8,.0f} jobs/s "
            f"({row.jobs_per_s / base:.2f}x one master); Redis CPU per job on each master: "
            f"{', '.join(f'{us:.0f} us' for us in row.redis_us_per_job)}; busiest process: "
            f"{busiest} ({row.cpu_s[busiest] / row.wall_s:.0%} of a core)")
        lines.append("    CPU s: " + ", ".join(f"{k} {v}" for k, v in sorted(row.cpu_s.items())))
    lines.append(json.dumps([asdict(r) for r in rows]))
    return "\n".join(lines)
