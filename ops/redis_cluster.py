"""Start and stop a private Redis Cluster: ``masters`` masters with ``replicas`` replicas
each, every node a ``redis-server --cluster-enabled yes`` child process on a free port of
127.0.0.1 with its files in a folder of its own, joined by ``redis-cli --cluster create``.

The tests, ``switchyard up --cluster`` and ``switchyard bench queue --cluster`` use it.
A short ``cluster-node-timeout`` (1.5 s by default) makes a failover take a few seconds.
Nodes are stopped by their PIDs; nothing here touches a server it did not start.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

import redis

from switchyard.broker.errors import SwitchyardError
from switchyard.ops.redis_server import RedisServer, find_redis_server, free_port

__all__ = ["RedisCluster"]


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free as well."""
    for _ in range(1000):
        port = free_port()
        if port <= 55535 and _bindable(port + 10000):
            return port
    raise SwitchyardError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _ClusterNodeServer(RedisServer):
    def __init__(self, folder: Path, node_timeout_ms: int, **kwargs: Any) -> None:
        super().__init__(folder, free_cluster_port(), **kwargs)
        self.node_timeout_ms = node_timeout_ms

    def arguments(self) -> list[str]:
        return [*super().arguments(), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # a replica may take over however long it was cut off (tests kill masters)
                "--cluster-replica-validity-factor", "0"]


class RedisCluster:
    """A local Redis Cluster; :attr:`url` is its ``redis+cluster://`` URL."""

    def __init__(self, folder: Path, *, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1500, aof: bool = False,
                 appendfsync: Literal["always", "everysec", "no"] = "everysec",
                 binary: str | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.masters = masters
        self.replicas = replicas
        binary = binary or find_redis_server()
        self.cli = str(Path(binary).with_name("redis-cli"))
        self.nodes = [
            _ClusterNodeServer(self.folder / f"node{i}", node_timeout_ms, aof=aof,
                               appendfsync=appendfsync, binary=binary)
            for i in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout_s: float = 30.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            if self.replicas == 0:
                self._join()
            else:
                self._create()
            self.wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        out = subprocess.run(
            [self.cli, "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, check=False, timeout=60)
        if out.returncode != 0:
            raise SwitchyardError(f"redis-cli --cluster create failed: {out.stdout[-500:]}"
                                  f"{out.stderr[-500:]}")

    def _join(self) -> None:
        """Masters only (``redis-cli --cluster create`` wants three or more): each takes an
        equal run of the slots, as that tool deals them, and meets the first."""
        first = self.nodes[0].port
        for i, node in enumerate(self.nodes):
            with redis.Redis(port=node.port) as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(
                    i * 16384 // self.masters, (i + 1) * 16384 // self.masters))
                if i:
                    client.execute_command("CLUSTER MEET", "127.0.0.1", first)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports ``cluster_state:ok`` and knows every master, and
        every live replica's link to its master is up (a durable write's ``WAIT`` counts
        on it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if all(self._ok(node) for node in self.nodes if node.alive):
                return
            if time.monotonic() > deadline:
                raise SwitchyardError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def _ok(self, node: RedisServer) -> bool:
        try:
            with redis.Redis(port=node.port, socket_timeout=1) as client:
                info = client.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return False
        fields = {str(k): str(v) for k, v in dict(info).items()}  # (redis-py parses it)
        if (fields.get("cluster_state") != "ok"
                or int(fields.get("cluster_size", 0)) < self.masters):
            return False
        with redis.Redis(port=node.port, socket_timeout=1) as client:
            replication = client.info("replication")
        if replication.get("role") == "slave":
            return bool(replication.get("master_link_status") == "up")
        return True

    def master_of(self, key: str) -> RedisServer:
        """The node that is master of ``key``'s slot now."""
        for node in self.nodes:
            if not node.alive:
                continue
            with redis.Redis(port=node.port, socket_timeout=1) as client:
                slot = int(client.execute_command("CLUSTER KEYSLOT", key))
                for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise SwitchyardError(f"no live node knows the master of {key!r}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A replica of ``master`` (its first, as the master reports them)."""
        with redis.Redis(port=master.port, socket_timeout=1) as client:
            info = client.info("replication")
        port = int(info["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
