"""Typed Redis connection settings parsed from a URL.

``redis://``, ``rediss://`` and ``unix://`` name one server. ``redis+cluster://`` (or
``rediss+cluster://``) names a Redis Cluster by one or more of its nodes, comma-separated
(``redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000``): the client discovers the rest and
follows the cluster's topology (MOVED/ASK, failovers). A cluster has database 0 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.exceptions import DataError

from switchyard.broker.errors import RedisSettingsError

__all__ = ["RedisSettings", "is_cluster", "redact_url"]

_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379


@dataclass(frozen=True)
class RedisSettings:
    """Where the broker lives. Build it with :meth:`from_url`."""

    url: str
    scheme: str
    host: str | None
    port: int | None
    path: str | None
    db: int
    nodes: tuple[tuple[str, int], ...] = ()
    """A cluster's seed nodes (host, port); empty for a single server."""

    @property
    def cluster(self) -> bool:
        return bool(self.nodes)

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        shown = redact_url(url)
        try:
            return cls._parse(url, shown)
        except ValueError as exc:  # urlsplit's own (a bad IPv6 host, say)
            raise RedisSettingsError(f"invalid Redis URL {shown!r}: {exc}") from None

    @classmethod
    def _parse(cls, url: str, shown: str) -> RedisSettings:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise RedisSettingsError(
                f"unsupported Redis URL scheme {parts.scheme!r} in {shown!r}: "
                f"use one of {', '.join(s + '://' for s in _SCHEMES)}"
            )
        db = _db_of(shown, parts.path if parts.scheme != "unix" else "", parts.query)
        if parts.scheme.endswith("+cluster"):
            return cls._cluster(url, shown, parts.netloc.rpartition("@")[2], db)
        if parts.scheme == "unix":
            if not parts.path:
                raise RedisSettingsError(f"unix:// URL {shown!r} names no socket path")
            return cls(url, parts.scheme, None, None, parts.path, db)
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise RedisSettingsError(f"invalid port in Redis URL {shown!r}") from None
        if not parts.hostname:
            raise RedisSettingsError(f"Redis URL {shown!r} names no host")
        return cls(url, parts.scheme, parts.hostname, port, None, db)

    @classmethod
    def _cluster(cls, url: str, shown: str, hosts: str, db: int) -> RedisSettings:
        if db:
            raise RedisSettingsError(f"a Redis Cluster has database 0 only, not {db} ({shown!r})")
        nodes = []
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":")
            host = host.strip("[]")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise RedisSettingsError(
                    f"Redis Cluster URL {shown!r}: {item!r} is not host:port")
            nodes.append((host, int(port)))
        scheme = url.partition("://")[0]
        return cls(url, scheme, nodes[0][0], nodes[0][1], None, 0, tuple(nodes))

    def connect(self, *, max_connections: int = 64, connect_timeout_s: float = 5.0,
                socket_timeout_s: float = 30.0, pool_timeout_s: float = 30.0
                ) -> aioredis.Redis:
        """An asyncio client; responses decoded as UTF-8 text. Its pool makes callers wait
        for a free connection when all ``max_connections`` are busy, for at most
        ``pool_timeout_s`` (then ``redis.exceptions.ConnectionError``).

        A server that does not accept a connection within ``connect_timeout_s``, or stops
        answering one for ``socket_timeout_s`` (longer than any blocking read Switchyard
        makes), raises a ``redis.exceptions.TimeoutError``, so no role hangs on a host
        that vanished; every role retries with backoff.

        For a cluster: a ``redis.asyncio.RedisCluster`` (typed as ``aioredis.Redis``: the
        commands Switchyard sends are the same; see :func:`is_cluster` where they
        differ), ``max_connections`` to each node."""
        if self.cluster:
            return self._connect_cluster(max_connections, connect_timeout_s, socket_timeout_s)
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=max_connections, timeout=pool_timeout_s,
            **self._options(connect_timeout_s, socket_timeout_s))
        pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
        return aioredis.Redis(connection_pool=pool)

    def _connect_cluster(self, max_connections: int, connect_timeout_s: float,
                         socket_timeout_s: float) -> aioredis.Redis:
        client = aioredis.RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            max_connections=max_connections,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            **self._cluster_options(connect_timeout_s, socket_timeout_s))
        # Every node's connections pack with hiredis, as a single server's do: the nodes
        # known now and those the client discovers later.
        manager = client.nodes_manager
        packed = _PACKED[manager.connection_kwargs["connection_class"]]
        manager.connection_kwargs["connection_class"] = packed
        for node in manager.startup_nodes.values():
            node.connection_class = cast(type[aioredis.Connection], packed)
        return cast(aioredis.Redis, client)

    def connect_sync(self, *, connect_timeout_s: float = 5.0, socket_timeout_s: float = 30.0
                     ) -> redis.Redis:
        """A synchronous client on one connection, with the same options as
        :meth:`connect`: for one thread (the sync client keeps one per calling thread; a
        single connection skips the pool's per-command checks). For a cluster: a
        ``redis.RedisCluster`` (typed as ``redis.Redis``), one connection per node."""
        if self.cluster:
            return cast(redis.Redis, redis.RedisCluster(
                startup_nodes=[SyncClusterNode(host, port)  # type: ignore[no-untyped-call]
                               for host, port in self.nodes],
                **self._cluster_options(connect_timeout_s, socket_timeout_s)))
        pool = redis.ConnectionPool.from_url(
            self.url, max_connections=1, command_packer=_HiredisPacker(),
            **self._options(connect_timeout_s, socket_timeout_s))
        pool.connection_class = _PACKED_SYNC.get(pool.connection_class, pool.connection_class)
        return redis.Redis(connection_pool=pool, single_connection_client=True)

    def _cluster_options(self, connect_timeout_s: float, socket_timeout_s: float
                         ) -> dict[str, Any]:
        """:meth:`_options`, with the credentials and TLS the cluster URL names."""
        first = urlsplit(self.url.replace("+cluster", "", 1).split(",", 1)[0])
        return {"username": _unquoted(first.username), "password": _unquoted(first.password),
                "ssl": self.scheme.startswith("rediss"),
                **self._options(connect_timeout_s, socket_timeout_s)}

    def _options(self, connect_timeout_s: float, socket_timeout_s: float) -> dict[str, Any]:
        return {
            "decode_responses": True, "health_check_interval": 30,
            "driver_info": None,  # no CLIENT SETINFO: a role's ACL user need not allow CLIENT
            "socket_connect_timeout": connect_timeout_s, "socket_timeout": socket_timeout_s,
            **({} if self.scheme == "unix" else {"socket_keepalive": True})}

    def display(self) -> str:
        """The URL without a password, for logs and error messages."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        if self.cluster:
            return f"{self.scheme}://" + ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"{self.scheme}://{self.host}:{self.port}/{self.db}"


def redact_url(url: str) -> str:
    """The URL with any password (and user) replaced by ``***``, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}://{netloc}{slash}{tail}"


def is_cluster(redis: object) -> bool:
    """Whether a client from :meth:`RedisSettings.connect` talks to a Redis Cluster."""
    return isinstance(redis, aioredis.RedisCluster)


def _unquoted(text: str | None) -> str | None:
    return unquote(text) if text else None


def _db_of(url: str, path: str, query: str) -> int:
    raw = path.strip("/")
    for item in query.split("&"):
        if item.startswith("db="):
            raw = item[3:]
    if not raw:
        return 0
    if not raw.isdigit():
        raise RedisSettingsError(f"invalid database number {raw!r} in Redis URL {url!r}")
    return int(raw)


def _hiredis_pack(*args: Any) -> list[bytes]:
    name = args[0]
    if (" " if isinstance(name, str) else b" ") in name:  # 'CONFIG GET': two arguments
        args = (*name.split(), *args[1:])
    try:
        return [hiredis.pack_command(args)]
    except TypeError as exc:
        raise DataError(str(exc)) from exc


class _HiredisPacking:
    """Commands packed by hiredis (C) instead of redis-py's packers, which encode every
    argument in Python (and the asyncio one copies its buffer once per argument): a fifth
    of a worker's CPU under load, where one script call carries thousands of arguments,
    and half of a sync enqueue's (its ``EVALSHA`` carries about 30). The same wire bytes
    either way."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return _hiredis_pack(*args)


class _HiredisPacker:
    """For redis-py's sync connections, whose ``send_command`` (redis-py 6 and later)
    calls their ``command_packer`` and not ``pack_command``."""

    @staticmethod
    def pack(*args: Any) -> list[bytes]:
        return _hiredis_pack(*args)


class _PackedConnection(_HiredisPacking, aioredis.Connection):
    pass


class _PackedSSLConnection(_HiredisPacking, aioredis.SSLConnection):
    pass


class _PackedUnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    pass


class _PackedSyncConnection(_HiredisPacking, redis.Connection):
    pass


class _PackedSyncSSLConnection(_HiredisPacking, redis.SSLConnection):
    pass


class _PackedSyncUnixConnection(_HiredisPacking, redis.UnixDomainSocketConnection):
    pass


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    aioredis.Connection: _PackedConnection,
    aioredis.SSLConnection: _PackedSSLConnection,
    aioredis.UnixDomainSocketConnection: _PackedUnixConnection,
}
_PACKED_SYNC: dict[type[Any], type[Any]] = {
    redis.Connection: _PackedSyncConnection,
    redis.SSLConnection: _PackedSyncSSLConnection,
    redis.UnixDomainSocketConnection: _PackedSyncUnixConnection,
}
