"""`switchyard top`: a live view of the platform in the terminal (rich), read from Redis
once a second (``--interval``); works over SSH; ``q`` quits (Ctrl-C too).

Pools (priorities as inter, std, batch): depth, in flight, oldest age, wait p99 (the
highest of its workers' last 2,048 jobs, from their heartbeats), drain rate, cap in force
and dead letters, per priority; it fits an 80-column terminal.
Workers: device, batch size (last / most), memory and GPU busy. Providers: each target's
breaker and error rate over its current window, and any pause the provider announced.
Spend: USD a minute since the last refresh, by provider.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.schemas import PRIORITIES
from switchyard.broker.settings import RedisSettings
from switchyard.broker.units import format_size
from switchyard.ops.exporter import Snapshot, cap_in_force, read_snapshot

__all__ = ["add_parser", "render"]


def render(now: Snapshot, before: Snapshot | None, config: SwitchyardConfig) -> Group:
    """One frame: pools, workers, providers and spend (``before``: the last frame's
    snapshot, for spend a minute)."""
    return Group(_pools(now, config), _workers(now), _providers(now), _spend(now, before))


def _pools(s: Snapshot, config: SwitchyardConfig) -> Table:
    t = _table("pools")
    for col in ("pool", "prio", "depth", "flight", "oldest", "wait p99", "drain/s",
                "cap", "dead", "alive"):
        t.add_column(col, justify="left" if col in ("pool", "priority") else "right")
    for pool in s.pools:
        p99 = max((int(w["wait_p99_ms"]) for w in pool.workers if w.get("wait_p99_ms")),
                  default=None)
        for i, priority in enumerate(PRIORITIES):
            streams = [st for st in pool.streams if st.priority == priority]
            counters = [c for (name, _, p), c in s.counters.items()
                        if name == pool.pool and p == priority]
            ages = [st.oldest_age_s for st in streams if st.oldest_age_s is not None]
            caps = [cap_in_force(config, pool.pool, priority, c) for c in counters]
            t.add_row(pool.pool if i == 0 else "", _SHORT[priority],
                      str(sum(st.depth for st in streams)),
                      str(sum(st.pending for st in streams)),
                      f"{max(ages):.1f}s" if ages else "-",
                      f"{p99} ms" if i == 0 and p99 is not None else "",
                      f"{sum(c.drain_rate for c in counters):.1f}",
                      str(sum(caps)), str(pool.dead_letters) if i == 0 else "",
                      str(len(pool.workers)) if i == 0 else "")
    return t


_SHORT = {"interactive": "inter", "standard": "std", "batch": "batch"}


def _table(title: str) -> Table:
    """A compact table (fits 80 columns) with its title on the left."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                 padding=(0, 0, 0, 1), pad_edge=False)


def _workers(s: Snapshot) -> Table:
    t = _table("workers")
    for col in ("pool", "worker", "device", "batch", "memory", "GPU busy"):
        t.add_column(col)
    for pool in s.pools:
        for w in pool.workers:
            memory = "-"
            if w.get("mem_total"):
                total = int(w["mem_total"])
                memory = f"{format_size(total - int(w['mem_free']))} / {format_size(total)}"
            busy = f"{float(w['gpu_util']):.0%}" if w.get("gpu_util") else "-"
            t.add_row(pool.pool, w["consumer"], w.get("device", "?"),
                      f"{w.get('last_batch', '-')}/{w.get('max_batch', '?')}", memory, busy)
    return t


def _providers(s: Snapshot) -> Table:
    t = _table("providers")
    for col in ("provider", "model", "breaker", "error rate", "paused"):
        t.add_column(col)
    for (provider, model), b in s.breakers.items():
        calls, fails = int(b.get("calls", 0)), int(b.get("fails", 0))
        paused = s.pauses.get(provider, 0.0)
        t.add_row(provider, model, b.get("state", "closed"),
                  f"{fails / calls:.0%}" if calls else "-",
                  f"{paused:.0f}s" if paused else "-")
    return t


def _spend(now: Snapshot, before: Snapshot | None) -> Table:
    t = _table("spend")
    t.add_column("provider")
    t.add_column("USD/min", justify="right")
    t.add_column("USD total", justify="right")
    elapsed = (now.at_ms - before.at_ms) / 60_000 if before is not None else 0
    for key, usd in sorted(now.spent.items()):
        if key.startswith("provider:"):
            per_min = "-"
            if before is not None and elapsed > 0:
                per_min = f"{(usd - before.spent.get(key, 0.0)) / elapsed:.6f}"
            t.add_row(key[9:], per_min, f"{usd:.6f}")
    return t


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("top", help="a live view of pools, workers, providers and spend")
    p.add_argument("--config")
    p.add_argument("--redis-url")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(handler=lambda ns: asyncio.run(_top(ns)))


async def _top(ns: argparse.Namespace) -> int:
    config = load_config(ns.config)
    redis = RedisSettings.from_url(resolve_redis_url(config, ns.redis_url)).connect()
    console = Console()
    try:
        before = None
        if ns.once:
            console.print(render(await read_snapshot(redis, config), None, config))
            return 0
        with _keys() as pressed, Live(console=console, screen=True,
                                      auto_refresh=False) as live:
            while True:
                now = await read_snapshot(redis, config)
                live.update(render(now, before, config), refresh=True)
                before = now
                if await _wait_for_q(pressed, ns.interval):
                    return 0
    except KeyboardInterrupt:
        return 0
    finally:
        await redis.aclose()


async def _wait_for_q(pressed: int | None, interval: float) -> bool:
    """Sleep ``interval`` seconds, or less if ``q`` is pressed (True then)."""
    if pressed is None:
        await asyncio.sleep(interval)
        return False
    ready, _, _ = await asyncio.to_thread(select.select, [pressed], [], [], interval)
    return bool(ready) and b"q" in os.read(pressed, 64).lower()


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """Standard input in cbreak mode (single key presses, no echo), when it is a terminal."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
