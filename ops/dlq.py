"""`switchyard dlq list|replay|purge`: the dead-letter streams of every pool (or one).

A dead letter is named ``<pool>.<partition>/<entry id>`` (the ``REF`` column of
``list``); ``replay`` and ``purge`` take such refs, or ``--all`` (with ``--pool``, that
pool's only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from switchyard.broker.config import load_config
from switchyard.broker.deadletters import DeadLetter, list_dead, purge, replay
from switchyard.broker.errors import ConfigError
from switchyard.broker.keys import Keys, PartitionKeys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings

__all__ = ["DlqOptions", "add_parser", "run"]

ALL_LIMIT = 100_000
"""Dead letters one ``--all`` acts on, at most, per partition."""


@dataclass(frozen=True)
class DlqOptions:
    action: str
    config: str | None = None
    redis_url: str | None = None
    pool: str | None = None
    refs: tuple[str, ...] = ()
    all: bool = False
    limit: int = 100
    json: bool = False


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="list, replay or purge dead letters")
    p.add_argument("action", choices=("list", "replay", "purge"))
    p.add_argument("refs", nargs="*", metavar="REF", help="<pool>.<partition>/<entry id>")
    p.add_argument("--all", action="store_true", help="every dead letter (of --pool if given)")
    p.add_argument("--pool", help="only this pool's dead letters")
    p.add_argument("--limit", type=int, default=100, help="list at most this many per partition")
    p.add_argument("--json", action="store_true", help="list as JSON lines")
    p.add_argument("--config", help="TOML config file (default: $SWITCHYARD_CONFIG, builtin)")
    p.add_argument("--redis-url", help="overrides [redis] url")
    p.set_defaults(handler=lambda ns: run(DlqOptions(
        ns.action, ns.config, ns.redis_url, ns.pool, tuple(ns.refs), ns.all, ns.limit,
        ns.json)))


def run(options: DlqOptions) -> int:
    if options.action != "list" and not (options.refs or options.all):
        raise ConfigError(f"dlq {options.action}: name dead letters (REF ...) or pass --all")
    for line in asyncio.run(_run(options)):
        print(line, flush=True)
    return 0


async def _run(options: DlqOptions) -> list[str]:
    config = load_config(options.config)
    if options.pool is not None and options.pool not in config.pools:
        raise ConfigError(f"no pool {options.pool!r} (configured: {', '.join(config.pools)})")
    keys = Keys(config.redis.prefix)
    partitions = [k for name, pool in config.pools.items()
                  if options.pool in (None, name) for k in keys.partitions(name, pool.partitions)]
    redis = RedisSettings.from_url(resolve_redis_url(config, options.redis_url)).connect()
    try:
        limit = options.limit if options.action == "list" else ALL_LIMIT
        letters = await list_dead(redis, _named(partitions, options.refs) or partitions,
                                  limit=limit)
        if options.refs:
            wanted = set(options.refs)
            letters = [d for d in letters if d.ref in wanted]
            missing = wanted - {d.ref for d in letters}
            if missing:
                raise ConfigError(f"no such dead letters: {', '.join(sorted(missing))}")
        if options.action == "list":
            return _listing(letters, options.json)
        if options.action == "purge":
            return [f"purged {await purge(redis, letters)} dead letters"]
        done = await replay(Scripts(redis), letters, int(config.jobs.job_ttl_s * 1000))
        return [f"{ref}: {what}" for ref, what in done.items()]
    finally:
        await redis.aclose()


def _named(partitions: Sequence[PartitionKeys], refs: Sequence[str]) -> list[PartitionKeys]:
    """The partitions the refs name (checked: a ref must name a configured partition)."""
    by_name = {f"{k.pool}.{k.partition}": k for k in partitions}
    named = []
    for ref in refs:
        where, _, entry = ref.partition("/")
        if where not in by_name or not entry:
            raise ConfigError(f"{ref!r} is not <pool>.<partition>/<entry id> of a configured "
                              "pool (see `switchyard dlq list`)")
        named.append(by_name[where])
    return list(dict.fromkeys(named))


def _listing(letters: Sequence[DeadLetter], as_json: bool) -> list[str]:
    if as_json:
        return [json.dumps({"ref": d.ref, "job": d.job_id, "source": d.source,
                            "reason": d.reason, "payload": d.payload}) for d in letters]
    lines = [f"{'REF':<36} {'JOB':<40} REASON"]
    lines += [f"{d.ref:<36} {d.job_id[:40]:<40} {d.reason}" for d in letters]
    lines.append(f"{len(letters)} dead letters")
    return lines
