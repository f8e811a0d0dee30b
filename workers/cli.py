"""`switchyard worker`: the worker process for GPU (or CPU) hosts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass

from broker.config import load_config
from broker.settings import RedisSettings
from workers.engines import build_engine
from workers.errors import UnknownPool
from workers.runtime import Worker

__all__ = ["WorkerOptions", "add_parser", "serve"]

log = logging.getLogger("switchyard.worker")


@dataclass(frozen=True)
class WorkerOptions:
    pool: str
    config: str | None = None
    device: str | None = None
    redis_url: str | None = None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="serve one pool's streams")
    p.add_argument("--pool", required=True, help="pool to serve (see [pools] in the config)")
    p.add_argument("--config", help="TOML config file (default: $SWITCHYARD_CONFIG, builtin)")
    p.add_argument("--device", help="auto | cpu | cuda:N (default: the pool's device)")
    p.add_argument("--redis-url", help="overrides [redis] url")
    p.set_defaults(handler=lambda ns: serve(WorkerOptions(ns.pool, ns.config, ns.device,
                                                          ns.redis_url)))


def serve(options: WorkerOptions) -> int:
    """Run a worker until SIGTERM or SIGINT, then drain and exit 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(_serve(options))


async def _serve(options: WorkerOptions) -> int:
    config = load_config(options.config)
    if options.pool not in config.pools:
        raise UnknownPool(f"pool {options.pool!r} is not configured "
                          f"(configured: {', '.join(config.pools) or 'none'})")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine = build_engine(config.pools[options.pool], options.device)
    await engine.warmup()
    settings = RedisSettings.from_url(options.redis_url or config.redis.url)
    redis = settings.connect()
    try:
        worker = Worker(redis, config, options.pool, engine)
        log.info("worker %s serving pool %s: engine %s on %s, redis %s", worker.consumer,
                 options.pool, engine.name, engine.device, settings.display())
        stats = await worker.run(stop)
        log.info("worker %s drained: %d jobs in %d batches, %d released, %d dead-lettered",
                 worker.consumer, stats.jobs, stats.batches, stats.released, stats.dead_lettered)
    finally:
        await redis.aclose()
    return 0
