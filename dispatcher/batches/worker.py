"""The rq side of batches: the ``switchyard-batches`` queue, handing a batch to it, and
``switchyard batch-worker``, an rq worker with Switchyard's settings.

The batch worker is rq's ``SimpleWorker``: a batch runs in the worker's own process (no
fork), so a worker killed is a batch stopped, and its lease lapses. Beside it a sweeper
thread hands every batch whose lease lapsed to rq again (once: ``keys.batch_resume``),
which any batch worker then takes up, and deletes expired files. rq's own handling of a
job whose worker died (``Retry``) is the backstop. On SIGTERM the running batch is handed
back at once (its lease dropped, its jobs left running for whoever takes it up) and the
worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from typing import Any

import redis
from rq import Queue, Retry, SimpleWorker

from switchyard.broker import logs
from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import ConfigError
from switchyard.broker.keys import Keys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings
from switchyard.dispatcher.batches.files import FileStore
from switchyard.dispatcher.batches.records import BatchRecords
from switchyard.dispatcher.batches.runner import BROKER_URL_ENV

__all__ = ["RUN_JOB", "BatchWorker", "enqueue_batch", "rq_queue", "serve"]

log = logging.getLogger(__name__)

RUN_JOB = "switchyard.dispatcher.batches.runner.run_job"
FILE_SWEEP_S = 600.0


class BatchWorker(SimpleWorker):
    """rq's ``SimpleWorker``, polling its command channel every second instead of every
    60: redis-py 6 and later make ``PubSubWorkerThread.stop()`` wait for that poll to
    return, which held an idle worker's SIGTERM for up to a minute (seen as a supervisor
    killing it after its grace)."""

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name,
                      self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler)


def rq_queue(config: SwitchyardConfig, broker_url: str) -> Queue | None:
    """The batch queue, on ``[batch] redis_url`` (else the broker's server). rq keeps its
    own keys there, under ``rq:``. None where the broker is a Redis Cluster and ``[batch]
    redis_url`` is not set: rq has no cluster support, so batches need a server of their
    own there."""
    url = config.batch.redis_url or broker_url
    if RedisSettings.from_url(url).cluster:
        return None
    return Queue(config.batch.queue, connection=redis.Redis.from_url(url))


def enqueue_batch(queue: Queue, config: SwitchyardConfig, batch_id: str) -> None:
    """Hand the batch to rq (a fresh rq job each time: a take-up is a new job)."""
    queue.enqueue(RUN_JOB, batch_id, job_id=f"{batch_id}-{secrets.token_hex(4)}",
                  job_timeout=int(config.batch.window_s + 600),
                  result_ttl=int(config.batch.file_retention_s),
                  failure_ttl=int(config.batch.file_retention_s), retry=Retry(max=2))


def serve(config_path: str | None, redis_url: str | None, burst: bool = False) -> int:
    """Run a batch worker until SIGTERM (``burst``: until the queue is empty)."""
    logs.configure()
    if config_path:
        os.environ["SWITCHYARD_CONFIG"] = os.path.abspath(config_path)
    config = load_config()
    broker = resolve_redis_url(config, redis_url)
    os.environ[BROKER_URL_ENV] = broker
    queue = rq_queue(config, broker)
    if queue is None:
        raise ConfigError("the broker is a Redis Cluster, which rq cannot use: set [batch] "
                          "redis_url (SWITCHYARD_BATCH__REDIS_URL) to a Redis server for "
                          "the batch queue")
    stop = threading.Event()
    sweeper = threading.Thread(target=_sweep_forever, args=(config, broker, queue, stop),
                               name="switchyard-batch-sweeper", daemon=True)
    sweeper.start()
    try:
        worker = BatchWorker([queue], connection=queue.connection)
        worker.work(burst=burst, logging_level="INFO")
    finally:
        stop.set()
        sweeper.join(5)
    return 0


def _sweep_forever(config: SwitchyardConfig, broker: str, queue: Queue,
                   stop: threading.Event) -> None:
    files = FileStore.for_config(config)
    swept = 0.0
    while not stop.wait(min(config.batch.lease_s / 2, 5.0)):
        try:
            asyncio.run(_take_up(config, broker, queue))
            if time.monotonic() - swept > FILE_SWEEP_S:
                swept = time.monotonic()
                if gone := files.sweep():
                    log.info("deleted %d expired files", gone)
        except Exception as exc:  # keep sweeping whatever one round met
            log.warning("batch sweep: %s", exc)


async def _take_up(config: SwitchyardConfig, broker: str, queue: Queue) -> None:
    """Hand every batch whose lease lapsed to rq again (one sweeper each)."""
    client = RedisSettings.from_url(broker).connect()
    try:
        keys = Keys(config.redis.prefix)
        records = BatchRecords(client, keys, Scripts(client), config.batch.file_retention_s)
        for batch_id in await records.lapsed():
            ttl_ms = int(config.batch.lease_s * 3000)
            handed: Any = await client.set(keys.batch_resume(batch_id), "1", nx=True,
                                           px=ttl_ms)
            if handed:
                log.info("batch %s: its worker is gone; handing it to rq again", batch_id)
                await asyncio.to_thread(enqueue_batch, queue, config, batch_id)
                await records.stop_running(batch_id)
    finally:
        await client.aclose()
