"""`switchyard worker`: the worker process for GPU (or CPU) hosts.

``--device cuda:N`` serves one GPU; ``--device all`` starts one worker process per visible
GPU, each seeing only its own (``CUDA_VISIBLE_DEVICES=<that GPU>``, served as its
``cuda:0``), with its own memory probe and metrics port (``--metrics-port`` + N), and
restarts any that dies (a lost GPU exits 75), with backoff, until it is sent SIGTERM or
SIGINT.

The same sub-commands run as ``python -m switchyard.workers worker|watchdog``: that is how
every supervisor (``--device all``, ``switchyard up``, the benchmarks) starts its children
(:func:`worker_command`, :func:`watchdog_command`), so a child loads no CLI but its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ByteSize

from switchyard.broker import heap, logs
from switchyard.broker.config import load_config
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.settings import RedisSettings
from switchyard.broker.units import parse_size
from switchyard.workers.engines import build_engine
from switchyard.workers.errors import DeviceLost, EngineUnavailable, UnknownPool
from switchyard.workers.memory import choose_probe
from switchyard.workers.runtime import Worker
from switchyard.workers.supervisor import Supervisor, stop_signals
from switchyard.workers.watchdog import Watchdog

__all__ = ["WorkerOptions", "add_parser", "build_parser", "child_env", "gpu_devices", "serve",
           "watchdog_command", "worker_command"]

log = logging.getLogger("switchyard.worker")


@dataclass(frozen=True)
class WorkerOptions:
    pool: str
    config: str | None = None
    device: str | None = None
    redis_url: str | None = None
    memory_budget: int | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    """Where metrics listen: loopback unless told (a container sets ``0.0.0.0``)."""


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (1 to 65535): {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="serve one pool's streams")
    p.add_argument("--pool", required=True, help="pool to serve (see [pools] in the config)")
    p.add_argument("--config", help="TOML config file (default: $SWITCHYARD_CONFIG, builtin)")
    p.add_argument("--device", help="auto | cpu | cuda:N | all (one worker per visible GPU)")
    p.add_argument("--redis-url", help="overrides [redis] url")
    p.add_argument("--memory-budget", help="fixed memory budget per batch, e.g. 2GiB")
    p.add_argument("--metrics-port", type=_port, help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address metrics listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    logs.add_argument(p)
    p.set_defaults(handler=_worker)
    w = sub.add_parser("watchdog", help="re-queue the work of dead or hung workers "
                       "(several may run at once)")
    w.add_argument("--config", help="TOML config file (default: $SWITCHYARD_CONFIG, builtin)")
    w.add_argument("--redis-url", help="overrides [redis] url")
    logs.add_argument(w)
    w.set_defaults(handler=_watchdog)


def _worker(ns: argparse.Namespace) -> int:
    logs.configure(ns.log_format)
    return serve(WorkerOptions(ns.pool, ns.config, ns.device, ns.redis_url,
                               _budget(ns.memory_budget), ns.metrics_port, ns.metrics_host))


def _watchdog(ns: argparse.Namespace) -> int:
    logs.configure(ns.log_format)
    return watch(ns.config, ns.redis_url)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m switchyard.workers``: the worker and watchdog commands."""
    parser = argparse.ArgumentParser(
        prog="python -m switchyard.workers",
        description="Switchyard's worker and watchdog processes (`switchyard worker`, "
                    "`switchyard watchdog`).")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def worker_command(pool: str, *, config: str | Path | None = None,
                   redis_url: str | None = None, device: str | None = None,
                   memory_budget: int | None = None, metrics_port: int | None = None,
                   metrics_host: str | None = None) -> list[str]:
    """The command line of one worker process, for a supervisor to start."""
    return _command("worker", ("--pool", pool), ("--device", device), ("--config", config),
                    ("--redis-url", redis_url), ("--memory-budget", memory_budget),
                    ("--metrics-port", metrics_port), ("--metrics-host", metrics_host))


def watchdog_command(*, config: str | Path | None = None,
                     redis_url: str | None = None) -> list[str]:
    """The command line of one watchdog process, for a supervisor to start."""
    return _command("watchdog", ("--config", config), ("--redis-url", redis_url))


def _command(name: str, *flags: tuple[str, object]) -> list[str]:
    args = [sys.executable, "-m", "switchyard.workers", name]
    for flag, value in flags:
        if value is not None:
            args += [flag, str(value)]
    return args


def _budget(text: str | None) -> int | None:
    return None if text is None else parse_size(text, what="--memory-budget")


def watch(config_path: str | None, redis_url: str | None) -> int:
    """Run a watchdog until SIGTERM or SIGINT."""
    logs.configure()
    return asyncio.run(_watch(config_path, redis_url))


async def _watch(config_path: str | None, redis_url: str | None) -> int:
    config = load_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = RedisSettings.from_url(resolve_redis_url(config, redis_url)).connect()
    try:
        watchdog = Watchdog(redis, config)
        heap.settle()
        log.info("watchdog %s: every %g s", watchdog.consumer, config.watchdog.interval_s)
        await watchdog.run(stop)
        log.info("watchdog stopped: %s", watchdog.stats)
    finally:
        await redis.aclose()
    return 0


DEVICE_LOST_EXIT = 75
"""The exit code of a worker whose device is lost (EX_TEMPFAIL): restart it."""


def serve(options: WorkerOptions) -> int:
    """Run a worker until SIGTERM or SIGINT, then drain and exit 0 (75 when its device is
    lost, for the supervisor to restart it)."""
    logs.configure()
    if options.device == "all":
        return _serve_all(options, gpu_devices())
    try:
        return asyncio.run(_serve(options))
    except DeviceLost as exc:  # its jobs were handed back; a fresh process gets the GPU
        log.error("exiting: %s", exc)
        return DEVICE_LOST_EXIT


def gpu_devices(count: int | None = None) -> list[str]:
    """The visible GPUs, each as ``CUDA_VISIBLE_DEVICES`` names it (an index, a UUID or a
    MIG id; indices ``0`` .. ``N-1`` where it is unset). ``count`` overrides the probe."""
    if count is None:
        try:
            import torch
        except ImportError as exc:
            raise EngineUnavailable("--device all needs torch: pip install 'switchyard[gpu]'") \
                from exc
        count = int(torch.cuda.device_count())
    if count == 0:
        raise EngineUnavailable("--device all: no CUDA devices are visible on this host")
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if v.strip()]
    return visible[:count] if len(visible) >= count else [str(i) for i in range(count)]


def child_command(options: WorkerOptions, index: int) -> list[str]:
    """The command line of ``--device all``'s ``index``-th worker: it sees one GPU (see
    :func:`child_env`), its ``cuda:0``."""
    return worker_command(options.pool, config=options.config, redis_url=options.redis_url,
                          device="cuda:0", memory_budget=options.memory_budget,
                          metrics_port=None if options.metrics_port is None
                          else options.metrics_port + index, metrics_host=options.metrics_host)


def child_env(gpu: str) -> dict[str, str]:
    """A child's environment: only its own GPU visible, so neither it nor any library it
    loads creates a context (hundreds of MiB each) on the others."""
    return {"CUDA_VISIBLE_DEVICES": gpu}


def _serve_all(options: WorkerOptions, gpus: list[str]) -> int:
    stopping = stop_signals()
    supervisor = Supervisor(say=log.warning)
    try:
        for i, gpu in enumerate(gpus):
            supervisor.start(f"worker on GPU {gpu}", child_command(options, i),
                             Path(f"worker-{options.pool}-gpu{i}.log"), env=child_env(gpu))
        log.info("pool %s: one worker per GPU on %s", options.pool, ", ".join(gpus))
        supervisor.run(stopping)
    finally:
        supervisor.stop()
    return 0


async def _serve(options: WorkerOptions) -> int:
    config = load_config(options.config)
    if options.pool not in config.pools:
        raise UnknownPool(f"pool {options.pool!r} is not configured "
                          f"(configured: {', '.join(config.pools) or 'none'})")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = config.pools[options.pool]
    if options.memory_budget is not None:  # the flag replaces the pool's configured budget
        pool = pool.model_copy(update={"memory_budget": ByteSize(options.memory_budget)})
        config = config.model_copy(update={"pools": {**config.pools, options.pool: pool}})
    settings = RedisSettings.from_url(resolve_redis_url(config, options.redis_url))
    redis = settings.connect()
    try:
        engine = build_engine(pool, options.device, config=config, redis=redis)
        await engine.warmup()
        probe = choose_probe(engine.device, pool.memory_budget) if engine.token_bytes else None
        worker = Worker(redis, config, options.pool, engine, probe=probe)
        heap.settle()  # started: the modules and the model are never walked again
        if options.metrics_port is not None:
            worker.metrics.serve(options.metrics_port, options.metrics_host)
        log.info("worker %s serving pool %s: engine %s on %s, redis %s%s", worker.consumer,
                 options.pool, engine.name, engine.device, settings.display(),
                 f", metrics on {options.metrics_host}:{options.metrics_port}"
                 if options.metrics_port else "")
        try:
            stats = await worker.run(stop)
        finally:
            worker.metrics.close()
        log.info("worker %s drained: %d jobs in %d batches, %d released, %d dead-lettered, "
                 "%d OOM recoveries", worker.consumer, stats.jobs, stats.batches, stats.released,
                 stats.dead_lettered, stats.oom_recoveries)
    finally:
        await redis.aclose()
    return 0

