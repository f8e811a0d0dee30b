"""The Lua scripts (one ``.lua`` file per operation), registered with ``register_script``.

Scripts run one at a time through :meth:`Scripts.call`, or many in one round trip through
:meth:`Scripts.pipeline`. ``enqueue``, ``start`` and ``complete`` each take many jobs of one
stream per call (:func:`grouped` splits work that way), so a burst costs a few commands,
not a few per job. Pipelines send ``EVALSHA`` directly (redis-py's pipelined
scripts cost an extra ``SCRIPT EXISTS`` round trip on every execute); a ``NOSCRIPT``
reply, after a Redis restart say, loads the scripts and re-sends only the failed calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Literal, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from switchyard.broker.durability import waitaof_failure

__all__ = ["ScriptCall", "ScriptName", "Scripts", "grouped"]

T = TypeVar("T")

ScriptName = Literal["enqueue", "start", "complete", "release", "cancel", "breaker_allow",
                     "breaker_record", "ratelimit_take", "ratelimit_observe", "spill_forward",
                     "requeue", "expire", "replay"]
_NAMES: tuple[ScriptName, ...] = ("enqueue", "start", "complete", "release", "cancel",
                                  "breaker_allow", "breaker_record", "ratelimit_take",
                                  "ratelimit_observe", "spill_forward", "requeue", "expire",
                                  "replay")

ScriptCall = tuple[ScriptName, Sequence[str], Sequence[str | int | float]]
"""(script, KEYS, ARGV)."""


def grouped(items: Iterable[T], key: Callable[[T], str], size: int) -> list[list[T]]:
    """Items grouped by key (first-seen order kept), each group cut into runs of ``size``."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def _source(name: str) -> str:
    return resources.files("switchyard.broker").joinpath("lua", f"{name}.lua").read_text("utf-8")


class Scripts:
    """All of Switchyard's scripts, bound to one Redis client."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._scripts: dict[ScriptName, AsyncScript] = {
            name: redis.register_script(_source(name)) for name in _NAMES
        }

    async def load(self) -> None:
        """Load every script into the server's script cache (idempotent)."""
        for script in self._scripts.values():
            await self._redis.script_load(script.script)

    async def call(
        self, name: ScriptName, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> object:
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def pipeline(self, calls: Sequence[ScriptCall]) -> list[object]:
        """Run many script calls in one round trip; results in call order."""
        results, _ = await self.pipeline_fsynced(calls, None)
        return results

    async def pipeline_fsynced(self, calls: Sequence[ScriptCall], waitaof_ms: int | None
                               ) -> tuple[list[object], str | None]:
        """:meth:`pipeline`, each round trip followed (with ``waitaof_ms``) by ``WAITAOF 1
        0 waitaof_ms`` on its connection. Returns the results, and why the fsync was not
        confirmed (None when it was, or not asked for)."""
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
            if isinstance(result, Exception):
                raise result
        return results, failure

    async def _send(self, calls: Sequence[ScriptCall], waitaof_ms: int | None
                    ) -> tuple[list[object], str | None]:
        pipe: Pipeline = self._redis.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
        if waitaof_ms is not None:  # same connection: covers exactly these writes
            pipe.execute_command("WAITAOF", 1, 0, waitaof_ms)
        replies = list(await pipe.execute(raise_on_error=False))
        if waitaof_ms is None:
            return replies, None
        return replies[:-1], waitaof_failure(replies[-1])
