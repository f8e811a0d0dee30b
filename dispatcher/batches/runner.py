"""Running one batch, as an rq job of ``switchyard batch-worker``: validate its file,
feed its lines to the ``batch`` priority, write what comes back, and finish it.

Only the holder of the batch's lease runs it (``records.py``); it renews the lease and
reports progress a third of ``[batch] lease_s`` apart, and watches for a cancel and for
the window's end. Each line goes in with idempotency key ``<batch id>:<custom_id>``, at
most ``[batch] in_flight`` at a time, waiting out ``retry_after`` when admission refuses
it, with the rest of the window as its deadline. A batch worker that takes up a dead
one's batch skips what the journal holds (``journal.py``) and sends the rest again: what
the dead one had admitted comes back as the same jobs, so each line runs once.

Ends: ``completed``; ``cancelled`` (feeding stops, admitted jobs are cancelled and end
``batch_cancelled``, what finished is kept); ``expired`` (the window closed: what was
not done ends ``batch_expired``); ``failed`` (no line of the file is a request, or the
file is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import time
from pathlib import Path
from typing import Any

from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import REDIS_FAILURES, BrokerUnavailable, SwitchyardError
from switchyard.dispatcher.batches import lines as L
from switchyard.dispatcher.batches.errors import BatchNotFound, FileNotFound
from switchyard.dispatcher.batches.files import FileStore, new_file_id
from switchyard.dispatcher.batches.journal import Journal
from switchyard.dispatcher.batches.records import BatchRecords, BatchState
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.errors import AdmissionRejected, JobCancelled, JobExpired
from switchyard.dispatcher.gateway.errors import GatewayError, http_error

__all__ = ["BROKER_URL_ENV", "run", "run_job"]

BROKER_URL_ENV = "SWITCHYARD_BATCH_BROKER_URL"
"""Where ``switchyard batch-worker --redis-url`` hands the broker's URL to its jobs."""

_FINAL = {"cancelled": "cancelled", "expired": "expired", None: "completed"}
CHUNK = 500
"""Lines admitted together (their admissions coalesce into a round trip or two)."""
LANES = 32
"""Coroutines answering admitted lines, in the order they were admitted: a slow line holds
up one lane, not the batch."""


def run_job(batch_id: str) -> str:
    """rq's entry point: run (or take up) the batch to its end, with the configuration of
    the batch worker's process; the status it ended in ('' when it ended here without an
    end: another worker runs it, or SIGTERM handed it back, which is then passed on to
    rq's own handler so the worker stops)."""
    previous = signal.getsignal(signal.SIGTERM)
    termed: list[bool] = []
    try:
        return asyncio.run(run(batch_id, load_config(), os.environ.get(BROKER_URL_ENV) or None,
                               on_term=termed))
    finally:
        signal.signal(signal.SIGTERM, previous)
        if termed:
            os.kill(os.getpid(), signal.SIGTERM)


async def run(batch_id: str, config: SwitchyardConfig, redis_url: str | None = None,
              files: FileStore | None = None, on_term: list[bool] | None = None) -> str:
    """Run (or take up) the batch to its end; the status it ended in ('' as above).
    ``on_term``: hand the batch back on SIGTERM, and note it there."""
    files = files or FileStore.for_config(config)
    async with AsyncClient(config, redis_url=redis_url) as client:
        records = BatchRecords(client.redis, client.keys, client.scripts,
                               config.batch.file_retention_s)
        token, lease_ms = secrets.token_hex(8), int(config.batch.lease_s * 1000)
        if not await records.lease(batch_id, token, "take", lease_ms):
            return ""  # another batch worker runs it
        batch = _Run(client, records, files, config, batch_id, token)
        if on_term is not None:
            def hand_back() -> None:
                on_term.append(True)
                batch.hand_back()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, hand_back)
        try:
            return await batch.run()
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await records.lease(batch_id, token, "drop", lease_ms)
                if batch.stop == "handed":
                    await records.lapse_now(batch_id)


class _Run:
    def __init__(self, client: AsyncClient, records: BatchRecords, files: FileStore,
                 config: SwitchyardConfig, batch_id: str, token: str) -> None:
        self.client, self.records, self.files = client, records, files
        self.settings = config.batch
        self.max_retry_after = config.gateway.max_retry_after_s
        self.id, self.token = batch_id, token
        self.journal = Journal(files.root / "batches", batch_id)
        self.stop: str | None = None
        """Why feeding stopped: 'cancelled', 'expired', 'lost' (another worker took the
        lease) or 'handed' (given back on SIGTERM); None while it goes on."""
        self.stopping = asyncio.Event()
        self.sent: dict[str, L.Sent] = {}
        """Lines admitted and not answered yet, by custom_id."""
        self.running: set[asyncio.Task[None]] = set()
        self.state: BatchState

    async def run(self) -> str:
        try:
            self.state = await self.records.get(self.id)
        except BatchNotFound:
            return ""
        if self.state.ended:
            await self.records.stop_running(self.id)
            return self.state.status
        try:
            path = self.files.path(self.files.record(self.state.tenant,
                                                     self.state.input_file_id))
        except FileNotFound as exc:
            return await self._fail("invalid_file", str(exc))
        if self.state.status == "finalizing":
            return await self._finish(self.state.ending or "completed")
        if self.state.status == "validating":
            todo = await self._validate(path)
            if todo is None:
                return await self._fail("invalid_file", "no line of the file is a request "
                                        "(see the errors)", self._refusals(path))
        else:
            self.journal.resume()
            todo = [line for line in L.read_lines(path, self.state.endpoint)
                    if isinstance(line, L.Line) and line.custom_id not in self.journal.done]
        if self.state.status == "cancelling":
            self.stop = "cancelled"
        watching = asyncio.create_task(self._watch())
        try:
            await self._feed(todo)
        finally:
            watching.cancel()
            self.journal.flush()
        if self.stop in ("lost", "handed"):
            return ""
        return await self._finish(_FINAL[self.stop])

    def hand_back(self) -> None:
        """Stop here, as if the lease were lost: whoever takes the batch up answers the
        jobs already admitted."""
        self._stop("handed")

    async def _validate(self, path: Path) -> list[L.Line] | None:
        """Refused lines to the error file, then ``in_progress``; the lines to send (None
        when there are none and the batch fails)."""
        self.journal.reset()
        todo, refused = [], 0
        for line in L.read_lines(path, self.state.endpoint):
            if isinstance(line, L.Line):
                todo.append(line)
            else:
                refused += 1
                self.journal.error(line.custom_id, L.error_line(line.custom_id, line.code,
                                                                line.message))
        if not todo:
            self.journal.reset()
            return None
        self.journal.flush()
        counts = {"total": len(todo) + refused, "failed": refused}
        moved, _ = await self.records.move(self.id, "validating", "in_progress",
                                           in_progress_at=int(time.time()), **counts)
        if not moved:  # cancelled meanwhile (the counts still hold)
            await self.records.move(self.id, "*", "", **counts)
        self.state = await self.records.get(self.id)
        return todo

    def _refusals(self, path: Path) -> list[dict[str, Any]]:
        found = [line for line in L.read_lines(path, self.state.endpoint)
                 if isinstance(line, L.Refused)][:100]
        return [{"code": r.code, "line": r.number, "message": r.message, "param": None}
                for r in found] or [{"code": "empty_file", "line": None,
                                     "message": "the file has no lines", "param": None}]

    async def _feed(self, todo: list[L.Line]) -> None:
        """Admit the lines ``CHUNK`` at a time, at most ``in_flight`` unanswered, and
        answer them in ``LANES``; then, if the window closed, the rest ``batch_expired``."""
        admitted: asyncio.Queue[tuple[L.Line, L.Sent] | None] = asyncio.Queue()
        room = asyncio.Semaphore(self.settings.in_flight)
        lanes = [asyncio.create_task(self._answering(admitted, room)) for _ in range(LANES)]
        feeding = asyncio.create_task(self._feeding(todo, admitted, room))
        self.running.update([feeding, *lanes])
        await asyncio.gather(feeding, return_exceptions=True)
        for _ in lanes:
            admitted.put_nowait(None)
        await asyncio.gather(*lanes, return_exceptions=True)
        if self.stop == "expired":
            for line in todo:
                if line.custom_id not in self.journal.done:
                    self.journal.error(line.custom_id, L.error_line(
                        line.custom_id, "batch_expired", "the request was not executed "
                        "before the batch's completion window closed"))

    async def _feeding(self, todo: list[L.Line],
                       admitted: asyncio.Queue[tuple[L.Line, L.Sent] | None],
                       room: asyncio.Semaphore) -> None:
        size = min(CHUNK, self.settings.in_flight)  # (a chunk larger would never fit)
        for first in range(0, len(todo), size):
            chunk = todo[first:first + size]
            for _ in chunk:
                await room.acquire()
            if self.stop is not None:
                return
            sents = await asyncio.gather(*(self._admit(line) for line in chunk))
            for line, sent in zip(chunk, sents, strict=True):
                if sent is None:  # it failed alone (written), or feeding stopped
                    room.release()
                else:
                    self.sent[line.custom_id] = sent
                    admitted.put_nowait((line, sent))

    async def _answering(self, admitted: asyncio.Queue[tuple[L.Line, L.Sent] | None],
                         room: asyncio.Semaphore) -> None:
        while (item := await admitted.get()) is not None:
            line, sent = item
            try:
                await self._answer(line, sent)
            finally:
                self.sent.pop(line.custom_id, None)
                room.release()

    async def _admit(self, line: L.Line) -> L.Sent | None:
        """The line's job, admitted (rejections waited out); None when it never was: it
        failed on its own (written), or feeding stopped."""
        key = f"{self.id}:{line.custom_id}"
        while self.stop is None:
            # The rest of the window, in whole seconds: lines admitted together share it,
            # and so share one enqueue call (their spill thresholds are the same).
            left = float(int(self.state.expires_at - time.time()))
            if left <= 0:
                self._stop("expired")
                break
            try:
                return await L.send(self.client, self.state.endpoint, line, key=key,
                                    tenant=self.state.tenant, deadline_s=left)
            except AdmissionRejected as exc:
                await self._pause(min(left, exc.retry_after * (1 + 0.2 * random.random())))
            except BrokerUnavailable:
                await self._pause(1.0)
            except SwitchyardError as exc:  # this request's own fault
                self.journal.error(line.custom_id, L.failed_line(
                    line.custom_id, "", http_error(exc, self.max_retry_after)))
                return None
        return None

    async def _answer(self, line: L.Line, sent: L.Sent) -> None:
        try:
            result = await sent.job.result()
        except (JobCancelled, JobExpired) as exc:
            code = "batch_cancelled" if self.stop == "cancelled" else "batch_expired"
            if isinstance(exc, JobCancelled) and self.stop is None:
                code = "cancelled"  # cancelled by someone else: its own error
            self.journal.error(line.custom_id, L.error_line(line.custom_id, code, str(exc)))
        except SwitchyardError as exc:
            error: GatewayError = http_error(exc, self.max_retry_after)
            self.journal.error(line.custom_id, L.failed_line(line.custom_id, sent.job.id,
                                                             error))
        else:
            body = sent.render(result)
            self.journal.output(line.custom_id, L.output_line(line.custom_id, sent.job.id, body),
                                body.get("usage") or {}, result.cost_usd or 0.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def _stop(self, why: str) -> None:
        """Stop feeding (the first reason stands); cancel what was admitted, unless the
        batch went to another worker, which takes those jobs up by their keys."""
        if self.stop is not None:
            return
        self.stop = why
        self.stopping.set()
        if why in ("lost", "handed"):  # the next holder writes their answers, not this one
            for task in self.running:
                task.cancel()
            return
        for sent in list(self.sent.values()):
            task = asyncio.create_task(_cancel(sent))
            task.add_done_callback(lambda t: t.exception())

    async def _watch(self) -> None:
        """Renew the lease and report progress every third of it; stop at a cancel, at
        the window's end, or when the lease is lost."""
        period = self.settings.lease_s / 3
        lease_ms = int(self.settings.lease_s * 1000)
        while self.stop not in ("lost", "handed"):
            await asyncio.sleep(max(0.0, min(period, self.state.expires_at - time.time())))
            try:
                if not await self.records.lease(self.id, self.token, "renew", lease_ms):
                    self._stop("lost")
                    return
                self.journal.flush()
                _, status = await self.records.move(
                    self.id, "in_progress", "", completed=self.journal.completed,
                    failed=self.journal.failed)
            except REDIS_FAILURES:
                continue
            if status == "cancelling":
                self._stop("cancelled")
            if time.time() >= self.state.expires_at:
                self._stop("expired")

    async def _fail(self, code: str, message: str,
                    errors: list[dict[str, Any]] | None = None) -> str:
        errors = errors or [{"code": code, "line": None, "message": message, "param": None}]
        await self.records.move(self.id, "validating in_progress cancelling", "failed",
                                failed_at=int(time.time()),
                                errors=errors)
        await self.records.stop_running(self.id)
        return "failed"

    async def _finish(self, final: str) -> str:
        """``finalizing``, the journal placed as the output and error files (their ids
        recorded first, so a worker taking this up places them under the same ones),
        then the final status."""
        self.journal.close()
        counts = {"completed": self.journal.completed, "failed": self.journal.failed}
        if self.state.status == "finalizing":  # taken up as it finished: read what is left
            self.journal.resume()
            counts = {"completed": self.state.completed, "failed": self.state.failed}
        out_id = self.state.output_file_id or new_file_id()
        err_id = self.state.error_file_id or new_file_id()
        moved, status = await self.records.move(
            self.id, "in_progress cancelling finalizing", "finalizing",
            finalizing_at=self.state.stamps.get("finalizing_at", int(time.time())),
            ending=final, output_file_id=out_id, error_file_id=err_id, **counts)
        if not moved:
            return status
        tenant = self.state.tenant
        for path, file_id, name in ((self.journal.output_path, out_id, "output"),
                                    (self.journal.errors_path, err_id, "errors")):
            if path.exists() and not self.files.exists(tenant, file_id):
                self.files.adopt(tenant, f"{self.id}_{name}.jsonl", path, file_id)
        fields: dict[str, object] = {f"{final}_at": int(time.time())}
        if not self.files.exists(tenant, out_id):
            fields["output_file_id"] = ""
        if not self.files.exists(tenant, err_id):
            fields["error_file_id"] = ""
        if self.files.exists(tenant, out_id):
            usage = self._usage(out_id)
            fields["usage"] = usage
            cost = self._cost(usage)
            if cost:
                fields["cost"] = cost
        await self.records.move(self.id, "finalizing", final, **fields)
        await self.records.stop_running(self.id)
        self.journal.costs_path.unlink(missing_ok=True)
        return final

    def _usage(self, output_id: str) -> dict[str, Any]:
        """OpenAI's batch usage: the journal's sum over its output lines (each answered
        once, whichever worker wrote it); read from the output file itself when the batch
        was taken up after the journal had become it."""
        journal = self.journal
        if journal.input_tokens or journal.output_tokens or journal.completed:
            return _openai_usage(journal.input_tokens, journal.output_tokens)
        again = Journal(self.files.root / "batches", self.id)
        again.output_path = self.files.path(self.files.record(self.state.tenant, output_id))
        again.resume()
        return _openai_usage(again.input_tokens, again.output_tokens)

    def _cost(self, usage: dict[str, Any]) -> dict[str, float]:
        """What the batch cost (its results' ``cost_usd``: device time on GPU pools with a
        ``cost_per_hour``, provider charges on bridges) and, with ``[batch] list_price_*``,
        what its tokens would have cost at that list price."""
        cost: dict[str, float] = {}
        spent = self.journal.cost_usd()
        if spent:
            cost["usd"] = round(spent, 9)
        price_in, price_out = self.settings.list_price_in, self.settings.list_price_out
        if price_in or price_out:
            cost["list_price_usd"] = round((usage["input_tokens"] * price_in
                                            + usage["output_tokens"] * price_out) / 1e6, 9)
        return cost


async def _cancel(sent: L.Sent) -> None:
    with contextlib.suppress(SwitchyardError, *REDIS_FAILURES):
        await sent.job.cancel()


def _openai_usage(inp: int, out: int) -> dict[str, Any]:
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}
