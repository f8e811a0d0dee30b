"""The HTTP plumbing the fakes share (``fake-provider``, ``fake-engine``): a threading
server on 127.0.0.1 in a background thread, started and stopped as a context manager."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

__all__ = ["BackgroundServer"]


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # a load test opens hundreds of connections at once
    daemon_threads = True


class BackgroundServer:
    """``handler`` served on ``host``:``port`` (0: any free port) from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self._server = _Server((host, port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
