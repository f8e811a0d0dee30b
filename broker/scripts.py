"""The Lua scripts (one ``.lua`` file per operation), registered with ``register_script``.

Scripts run one at a time through :meth:`Scripts.call`, or many in one round trip through
:meth:`Scripts.pipeline`. ``enqueue``, ``start`` and ``complete`` each take many jobs of one
stream per call (:func:`grouped` splits work that way), so a burst costs a few commands,
not a few per job. Pipelines send ``EVALSHA`` directly (redis-py's pipelined
scripts cost an extra ``SCRIPT EXISTS`` round trip on every execute); a ``NOSCRIPT``
reply, after a Redis restart say, loads the scripts and re-sends only the failed calls.

Under ``maxmemory``, admission (``enqueue``, ``reserve``, ``replay``) is refused while
everything that finishes admitted work still runs. On Redis 7 each script says so in a
shebang (``#!lua``: deny-oom; ``#!lua flags=allow-oom``: allowed), added here once the
server's version is known; Redis 6.2 has no shebang, and decides at a script's first
write, so admission scripts write a deny-oom command first and the others a harmless
write that is not (``XACK`` of id ``0-0``, ``PEXPIRE``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from importlib import resources
from typing import Literal, TypeVar, get_args

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from switchyard.broker.durability import waitaof_failure
from switchyard.broker.nodes import NODE_FAILURES, NodeClients, moved
from switchyard.broker.settings import is_cluster
from switchyard.broker.wire import Wire

__all__ = ["ADMISSION", "ScriptCall", "ScriptName", "Scripts", "grouped", "source"]

T = TypeVar("T")

ScriptName = Literal["enqueue", "start", "complete", "release", "cancel", "breaker_allow",
                     "breaker_record", "ratelimit_take", "ratelimit_observe", "spill_forward",
                     "requeue", "expire", "replay", "reserve", "settle", "groups", "beat",
                     "forget", "lapse", "hold", "batch_status", "batch_lease"]
_NAMES: tuple[ScriptName, ...] = get_args(ScriptName)

ScriptCall = tuple[ScriptName, Sequence[str], Sequence[str | int | float]]
"""(script, KEYS, ARGV)."""

ADMISSION: frozenset[ScriptName] = frozenset({"enqueue", "reserve", "replay"})
"""Scripts refused over ``maxmemory``; every other one runs there (``allow-oom``)."""


def grouped(items: Iterable[T], key: Callable[[T], Hashable], size: int) -> list[list[T]]:
    """Items grouped by key (first-seen order kept), each group cut into runs of ``size``."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def source(name: ScriptName, shebang: bool) -> str:
    """A script's text: ``lua/_prelude.lua`` (shared argument checks), then its own; with
    ``shebang`` (Redis 7+), headed by its flags."""
    folder = resources.files("switchyard.broker").joinpath("lua")
    text = folder.joinpath("_prelude.lua").read_text("utf-8") + folder.joinpath(
        f"{name}.lua").read_text("utf-8")
    if not shebang:
        return text
    return ("#!lua\n" if name in ADMISSION else "#!lua flags=allow-oom\n") + text


class Scripts:
    """All of Switchyard's scripts, bound to one Redis client. ``shebang``: whether the
    server takes script flags (Redis 7+); None: asked of the server (``INFO server``) on
    first use. ``wire``: where :meth:`pipeline` sends (a lean connection to the same
    server, see ``wire.py``; default: the client's pool)."""

    def __init__(self, redis: aioredis.Redis, *, shebang: bool | None = None,
                 wire: Wire | None = None) -> None:
        self._redis = redis
        self._wire = wire
        self._shebang = shebang
        self._bound: dict[ScriptName, AsyncScript] | None = None
        self._nodes = NodeClients(redis) if is_cluster(redis) else None
        """On a cluster: connections to single nodes, for durable round trips."""

    async def aclose(self) -> None:
        if self._nodes is not None:
            await self._nodes.aclose()

    async def _scripts(self) -> dict[ScriptName, AsyncScript]:
        if self._bound is None:
            if self._shebang is None:
                self._shebang = await _takes_flags(self._redis)
            shebang = self._shebang
            self._bound = {name: self._redis.register_script(source(name, shebang))
                           for name in _NAMES}
        return self._bound

    def sha(self, name: ScriptName) -> str | None:
        """A script's SHA1 once the scripts are bound (None before their first use)."""
        return None if self._bound is None else self._bound[name].sha

    async def load(self) -> None:
        """Load every script into the server's script cache (idempotent)."""
        for script in (await self._scripts()).values():
            await self._redis.script_load(script.script)

    async def call(
        self, name: ScriptName, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> object:
        script = (await self._scripts())[name]
        return await script(keys=list(keys), args=list(args))

    async def pipeline(self, calls: Sequence[ScriptCall]) -> list[object]:
        """Run many script calls in one round trip; results in call order."""
        results, _ = await self.pipeline_fsynced(calls, None)
        return results

    async def pipeline_fsynced(self, calls: Sequence[ScriptCall], waitaof_ms: int | None,
                               *, raise_errors: bool = True
                               ) -> tuple[list[object], str | None]:
        """:meth:`pipeline`, each round trip followed (with ``waitaof_ms``) by ``WAITAOF 1
        0 waitaof_ms`` on its connection; on a Redis Cluster, by ``WAIT 1 waitaof_ms`` as
        well, on a connection to the node that took the writes (see ``nodes.py``).
        Returns the results, and why the fsync was not confirmed (None when it was, or not
        asked for). A call that failed raises its error, or with ``raise_errors=False``
        leaves it in its place among the results (so each caller gets only its own)."""
        if not calls:
            return [], None
        results, failure = await self._send(calls, waitaof_ms)
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            await self.load()
            again, failed_again = await self._send([calls[i] for i in retry], waitaof_ms)
            failure = failure or failed_again
            for i, result in zip(retry, again, strict=True):
                results[i] = result
        for result in results:
            if raise_errors and isinstance(result, Exception):
                raise result
        return results, failure

    async def _send(self, calls: Sequence[ScriptCall], waitaof_ms: int | None
                    ) -> tuple[list[object], str | None]:
        scripts = await self._scripts()
        if self._nodes is not None and waitaof_ms is not None:
            return await self._send_replicated(self._nodes, calls, waitaof_ms)
        if self._wire is not None:
            commands: list[Sequence[str | int | float]] = [
                ("EVALSHA", scripts[name].sha, len(keys), *keys, *args)
                for name, keys, args in calls]
            if waitaof_ms is not None:  # same connection: covers exactly these writes
                commands.append(("WAITAOF", 1, 0, waitaof_ms))
            replies = await self._wire.calls(commands)
            if waitaof_ms is None:
                return replies, None
            return replies[:-1], waitaof_failure(replies[-1])
        pipe: Pipeline = self._redis.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(scripts[name].sha, len(keys), *keys, *args)
        if waitaof_ms is not None:  # same connection: covers exactly these writes
            pipe.execute_command("WAITAOF", 1, 0, waitaof_ms)
        replies = list(await pipe.execute(raise_on_error=False))
        if waitaof_ms is None:
            return replies, None
        return replies[:-1], waitaof_failure(replies[-1])


    async def _send_replicated(self, nodes: NodeClients, calls: Sequence[ScriptCall],
                               wait_ms: int) -> tuple[list[object], str | None]:
        """The calls on their masters' own connections, each node's followed by ``WAIT 1``
        and ``WAITAOF 1 0`` (Redis before 7.2 has none: there the durability probe made
        sure every master fsyncs each write). One retry after a ``MOVED``."""
        by_slot: dict[int, list[int]] = {}
        for i, (_, keys, _) in enumerate(calls):
            by_slot.setdefault(key_slot(keys[0].encode()), []).append(i)
        results: list[object] = [None] * len(calls)
        failure: str | None = None
        for indices in by_slot.values():
            for attempt in range(2):
                replies, why = await self._on_node(nodes, [calls[i] for i in indices], wait_ms)
                if attempt == 0 and any(moved(r) for r in replies):
                    await nodes.refresh()
                    continue
                break
            failure = failure or why
            for i, reply in zip(indices, replies, strict=True):
                results[i] = reply
        return results, failure

    async def _on_node(self, nodes: NodeClients, calls: Sequence[ScriptCall], wait_ms: int
                       ) -> tuple[list[object], str | None]:
        scripts = await self._scripts()
        pipe: Pipeline = nodes.for_key(calls[0][1][0]).pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(scripts[name].sha, len(keys), *keys, *args)
        # each wait within 2/5 of the budget: a replica that does not answer is reported as
        # such (DurabilityUnavailable) before the caller's own timeout fires
        budget = max(1, wait_ms * 2 // 5)
        pipe.execute_command("WAIT", 1, budget)
        pipe.execute_command("WAITAOF", 1, 0, budget)
        try:
            replies = list(await pipe.execute(raise_on_error=False))
        except NODE_FAILURES:
            await nodes.refresh()
            raise
        *results, replicas, aof = replies
        if isinstance(replicas, Exception) or int(str(replicas)) < 1:
            return results, "no replica confirmed the write in time"
        if isinstance(aof, ResponseError) and "unknown command" in str(aof):
            return results, None  # before 7.2: appendfsync always (the probe checked)
        return results, waitaof_failure(aof)


async def _takes_flags(redis: aioredis.Redis) -> bool:
    """Whether the server is Redis 7 or later (scripts may carry a shebang). A server that
    will not say is treated as 6.2: the scripts work either way (see the module doc)."""
    try:
        info = await redis.info("server")
    except ResponseError:  # INFO refused (an ACL user without it)
        return False
    major = str(info.get("redis_version", "0")).partition(".")[0]
    return major.isdigit() and int(major) >= 7
