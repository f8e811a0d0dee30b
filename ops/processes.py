"""Worker and gateway child processes for the benchmarks and tests: started, waited for
until they are ready, and stopped by their PIDs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.errors import SwitchyardError
from switchyard.broker.keys import Keys
from switchyard.broker.settings import RedisSettings
from switchyard.ops.redis_server import free_port
from switchyard.workers.cli import worker_command
from switchyard.workers.supervisor import stop_process

__all__ = ["BatchWorkerProcess", "ExporterProcess", "GatewayProcess", "PrometheusProcess",
           "WorkerProcess"]


class _Child:
    """What both children share: a log, a process stopped by its PID, a context."""

    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.process is None:
            return None
        return stop_process(self.process, timeout_s)

    def _failed(self, what: str) -> SwitchyardError:
        """Stop it; the error naming ``what`` did not start, with its log's last lines."""
        self.stop()
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        return SwitchyardError(f"{what} did not start: {tail}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``args``, its output appended to :attr:`log`, ``env`` over ours."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})

    def _serve(self, args: list[str], ready_url: str, what: str, timeout_s: float,
               env: dict[str, str] | None = None) -> Self:
        """Start ``args`` (:meth:`_spawn`) and wait until ``ready_url`` answers 200."""
        self._spawn(args, env)
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(ready_url, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self._failed(what)
            time.sleep(0.05)


class WorkerProcess(_Child):
    """One `switchyard worker` child, stopped by its PID (SIGTERM: drain, then exit)."""

    def __init__(self, pool: str, redis_url: str, config_path: Path, config: SwitchyardConfig,
                 *, log: Path | None = None, metrics_port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.pool = pool
        self.redis_url = redis_url
        self.config = config
        self.log = log or config_path.with_name(f"worker-{pool}.log")
        self.args = worker_command(pool, config=config_path, redis_url=redis_url,
                                   metrics_port=metrics_port)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> Self:
        """Start the worker and wait until it has registered (its first heartbeat)."""
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> Self:
        """Start the worker without waiting for it."""
        self._spawn(self.args, self.env)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> Self:
        """Wait until this worker's consumer is in the pool's registry of live workers
        (consumer names hold the PID: see ``switchyard.workers.runtime.consumer_name``)."""
        assert self.process is not None
        key = Keys(self.config.redis.prefix).pool(self.pool).workers
        mine = re.compile(rf"-{self.process.pid}-[0-9a-f]+$")
        client = RedisSettings.from_url(self.redis_url).connect_sync()
        deadline = time.monotonic() + timeout_s
        try:
            while not any(mine.search(str(m)) for m in client.zrange(key, 0, -1)):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise self._failed(f"worker for {self.pool}")
                time.sleep(0.05)
        finally:
            client.close()
        return self

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout_s: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)



class GatewayProcess(_Child):
    """One `switchyard gateway` child on a free port (unless given), waited for until it
    answers ``/healthz``, stopped by its PID (SIGTERM: uvicorn's graceful shutdown)."""

    def __init__(self, redis_url: str, config_path: Path, *, port: int | None = None,
                 workers: int | None = None, log: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or config_path.with_name(f"gateway-{self.port}.log")
        self.args = [sys.executable, "-m", "switchyard.ops", "gateway", "--config",
                     str(config_path), "--redis-url", redis_url, "--port", str(self.port)]
        if workers is not None:
            self.args += ["--workers", str(workers)]
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Self:
        return self._serve(self.args, f"{self.url}/healthz", "the gateway", timeout_s, self.env)


class ExporterProcess(_Child):
    """One `switchyard exporter` child on a free port, ready once ``/metrics`` answers."""

    def __init__(self, redis_url: str, config_path: Path, *, port: int | None = None,
                 log: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or config_path.with_name(f"exporter-{self.port}.log")
        self.args = [sys.executable, "-m", "switchyard.ops", "exporter", "--config",
                     str(config_path), "--redis-url", redis_url, "--port", str(self.port)]

    def start(self, timeout_s: float = 60.0) -> Self:
        return self._serve(self.args, f"{self.url}/metrics", "the exporter", timeout_s)


class PrometheusProcess(_Child):
    """A real ``prometheus`` server (Debian's package) on a free port, its data in
    ``folder``; ready once ``/-/ready`` answers."""

    def __init__(self, config_file: Path, folder: Path, *, binary: str = "prometheus") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "prometheus.log"
        self.args = [binary, f"--config.file={config_file}",
                     f"--storage.tsdb.path={folder / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}"]

    def start(self, timeout_s: float = 60.0) -> Self:
        return self._serve(self.args, f"{self.url}/-/ready", "prometheus", timeout_s)


class BatchWorkerProcess(_Child):
    """One `switchyard batch-worker` child (an rq worker running batches), in a session of
    its own so that a test can kill it whole; stopped by its PID (SIGTERM: it hands its
    batch back and exits)."""

    def __init__(self, redis_url: str, config_path: Path, *, log: Path | None = None) -> None:
        self.log = log or config_path.with_name("batch-worker.log")
        self.args = [sys.executable, "-m", "switchyard.ops", "batch-worker", "--config",
                     str(config_path), "--redis-url", redis_url]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> Self:
        """Start it; ready once it logs that it listens on its queue."""
        with self.log.open("ab") as out:
            mark = out.tell()
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while "Listening on" not in self.log.read_text(errors="replace")[mark:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self._failed("the batch worker")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
