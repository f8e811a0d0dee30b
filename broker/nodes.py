"""Plain clients to single nodes of a Redis Cluster, for what must run on one connection
to the node that holds a key: a durable enqueue's ``EVALSHA`` followed by ``WAIT`` (and
``WAITAOF``), which count the writes *of their connection*. A cluster pipeline would send
those keyless commands to any node.

A node that answers ``MOVED`` (its slots failed over or moved), or cannot be reached, makes
the cluster client re-read the topology; the caller's retry then goes to the new master.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["NODE_FAILURES", "NodeClients", "at_node", "command", "moved", "refresh_topology"]


def moved(reply: object) -> bool:
    """Whether a reply is a ``MOVED``/``ASK`` redirection (the slot lives elsewhere now)."""
    return isinstance(reply, ResponseError) and str(reply).startswith(("MOVED", "ASK"))


def at_node(redis: aioredis.Redis, key: str) -> dict[str, Any]:
    """Keyword arguments that send a command to the master of ``key``'s slot on a cluster
    (none on a single server). For ``XREAD`` and ``XREADGROUP``, whose keys redis-py's
    cluster client finds by asking one fixed node (``COMMAND GETKEYS``): a round trip per
    call, and a call that fails for good once that node is gone."""
    if not isinstance(redis, aioredis.RedisCluster):
        return {}
    return {"target_nodes": redis.get_node_from_key(key)}


async def command(redis: aioredis.Redis, *args: str | int, **options: Any) -> Any:
    """One raw command (``options``: redis-py's, such as :func:`at_node`'s), its reply as
    redis-py parses it."""
    send = cast(Callable[..., Awaitable[Any]], redis.execute_command)
    return await send(*args, **options)


class NodeClients:
    """One small connection pool per master of ``cluster``, opened on first use."""

    def __init__(self, cluster: aioredis.Redis, max_connections: int = 8) -> None:
        self._cluster = cast(aioredis.RedisCluster, cluster)
        self._max = max_connections
        self._clients: dict[str, aioredis.Redis] = {}

    def for_key(self, key: str) -> aioredis.Redis:
        """A client to the node the cluster client takes for master of ``key``'s slot."""
        node = self._cluster.get_node_from_key(key)
        if node is None:
            raise RedisConnectionError(f"no node of the cluster holds {key!r}'s slot now")
        client = self._clients.get(node.name)
        if client is None:
            pool = aioredis.BlockingConnectionPool(
                connection_class=node.connection_class, max_connections=self._max,
                **node.connection_kwargs)
            client = self._clients[node.name] = aioredis.Redis(connection_pool=pool)
        return client

    async def refresh(self) -> None:
        """Re-read the cluster's topology (after ``MOVED``, or a node that went away)."""
        await self._cluster.nodes_manager.initialize()

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


NODE_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)
"""Failures of a node's connection that call for :meth:`NodeClients.refresh`."""


async def refresh_topology(redis: aioredis.Redis, failure: BaseException) -> None:
    """After ``failure`` on a cluster's node, re-read the topology now (best effort), so the
    next attempt goes to the master that took over. redis-py refreshes on its own after a
    connection error too, but not on every path (a pipeline's retry may keep asking a dead
    node), and a reader that retries forever must not depend on that."""
    if isinstance(redis, aioredis.RedisCluster) and (
            isinstance(failure, NODE_FAILURES) or moved(failure)):
        with contextlib.suppress(Exception):
            await redis.nodes_manager.initialize()
