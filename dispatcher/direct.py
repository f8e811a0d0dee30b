"""The sync client's enqueue, sent from the calling thread: one ``EVALSHA`` round trip on a
synchronous connection, and no hop to the background event loop.

Handing each call to the portal's loop and back costs two thread wake-ups, about as much
as the round trip itself (see docs/architecture.md, issue 15). So for the common case, a
job whose first admission attempt is one ``enqueue`` on its route's own pool, the sync
client builds the entry with the async client's own code (:meth:`AsyncClient.direct_plan`),
registers the reply waiter for the loop without waiting for it (``register_soon``: queued
for the reply reader before the job is sent, so it is in place before any reply can be
read, and without waking the loop's thread where the reader already reads the stream),
sends it, and reads the verdict with the same parser. Anything else (a duplicate key, a
rejection the async path would retry or spill, a durable job, the first call of a client,
a script the server lost) goes to the async path, from the start: nothing was admitted, or
the key finds the job admitted. On a Redis Cluster every call takes the async path.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import redis
from redis.exceptions import NoScriptError

from switchyard.broker.errors import REDIS_FAILURES, redis_failure
from switchyard.broker.keys import JobIdSource
from switchyard.dispatcher.admission import parse_admission
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.jobs import AsyncJob, R
from switchyard.dispatcher.submissions import wants_deltas
from switchyard.dispatcher.submitter import Submission, enqueue_call_for

__all__ = ["Direct"]


class Direct:
    """The fast path of one sync client, whose async client runs on ``loop``: one
    connection per calling thread (``threading.local``), all closed with the client."""

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self._local = threading.local()
        self._opened: list[redis.Redis] = []
        self._lock = threading.Lock()
        self._ids = JobIdSource()  # its own: the loop's thread draws from the client's
        self._off = client.settings.cluster
        """On a cluster (one connection per thread cannot follow slots): always None."""

    def _redis(self) -> redis.Redis:
        """The calling thread's connection (opened on its first call)."""
        conn: redis.Redis | None = getattr(self._local, "redis", None)
        if conn is None:
            timeout = self._client.config.redis.timeout_s
            conn = self._local.redis = self._client.settings.connect_sync(
                connect_timeout_s=timeout, socket_timeout_s=timeout)
            with self._lock:
                self._opened.append(conn)
        return conn

    def submit(self, job: Submission, kind: type[R],
               max_retries: int | None) -> AsyncJob[R] | None:
        """The admitted job's handle; None when the async path must take the call. Raises
        what the async path would: ``InvalidRequest``, ``AdmissionRejected``,
        ``BrokerUnavailable``."""
        if self._off:
            return None
        planned = self._client.direct_plan(job, max_retries, self._ids)
        sha = self._client.scripts.sha("enqueue")
        if planned is None or sha is None:
            return None
        entry = planned.entry
        replies = self._client.replies
        waiter, deltas = replies.waiter(self._loop, wants_deltas(job.request))
        replies.register_soon(self._loop, entry.job_id, entry.reply, waiter, deltas)
        handle = None
        try:
            _, keys, args = enqueue_call_for([entry])
            reply: Any = self._redis().evalsha(sha, len(keys), *keys, *args)
            handle = self._client.direct_handle(parse_admission(reply[0]), planned, kind,
                                                waiter, deltas)
        except NoScriptError:  # the server lost its scripts: the async path loads them
            return None
        except REDIS_FAILURES as exc:
            raise redis_failure(self._client.settings.display(), exc) from exc
        finally:
            if handle is None:
                self._loop.call_soon_threadsafe(replies.forget, entry.job_id)
        return handle

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
            conn.connection_pool.disconnect()
