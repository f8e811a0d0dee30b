"""A worker's writes to Redis: start, finish (complete or dead-letter) and release jobs.
Each is a Lua script; ``start`` and ``complete`` take every job of one stream in one call,
and all calls of a batch share one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from switchyard.broker.config import DEFAULT_TENANT, SwitchyardConfig
from switchyard.broker.keys import GROUP, PartitionKeys
from switchyard.broker.schemas import (
    ChatResult,
    EmbedResult,
    ErrorInfo,
    JobOutcome,
    JobState,
    now_ms,
)
from switchyard.broker.scripts import ScriptCall, Scripts, grouped
from switchyard.broker.streams import StreamEntry
from switchyard.workers.puller import Pulled

__all__ = [
    "Finish", "Finished", "Ledger", "dead_letters", "expire_call", "failure", "outcomes",
    "requeue_call",
]

PER_CALL = 500


@dataclass(frozen=True)
class Finished:
    """What one finish call did: outcomes it wrote, and results it dropped because their
    job had one already (duplicate executions: the job was re-queued while it ran here)."""

    written: int
    duplicates: int
    dropped: tuple[str, ...] = ()
    """The job ids of those results."""
    started: dict[int, str] = field(default_factory=dict)
    """Verdicts of the jobs started in the same round trip (see :meth:`Ledger.finish`)."""


@dataclass(slots=True)
class Finish:
    """How to finish one pulled entry: its outcome, and a dead-letter reason if any.
    (Not frozen: built per job, and frozen dataclasses build slowly.)"""

    pulled: Pulled
    outcome: JobOutcome | None
    dead_reason: str = ""


def failure(job_id: str, state: JobState, code: str, message: str) -> JobOutcome:
    return JobOutcome(
        id=job_id, state=state, error=ErrorInfo(code=code, message=message), finished_ms=now_ms()
    )


def outcomes(run: Sequence[Pulled],
             outputs: Sequence[EmbedResult | ChatResult | ErrorInfo]) -> tuple[list[Finish], int]:
    """How to finish each job of a run from the engine's outputs; and how many failed.
    Built from parts that are validated already: no second validation pass."""
    finished = now_ms()
    items, failed = [], 0
    for pulled, output in zip(run, outputs, strict=True):
        if isinstance(output, ErrorInfo):
            failed += 1
            outcome = JobOutcome.built(
                v=1, id=pulled.entry.job_id, state=JobState.FAILED, result=None,
                error=output, finished_ms=finished)
        else:
            outcome = JobOutcome.built(
                v=1, id=pulled.entry.job_id, state=JobState.SUCCEEDED, result=output,
                error=None, finished_ms=finished)
        items.append(Finish(pulled, outcome))
    return items, failed


def dead_letters(bad: Sequence[Pulled]) -> list[Finish]:
    """Entries that cannot be served: to the dead-letter stream, their jobs failed."""
    return [Finish(p, failure(p.entry.job_id, JobState.FAILED, "bad_request", p.error or ""),
                   dead_reason=p.error or "undecodable") for p in bad]


NOT_DRAINED = frozenset({"providers_failed", "stream_interrupted"})
"""Jobs that ended with these did not drain their stream (no provider served them): not
counting them lowers the stream's drain rate, and so its cap, while providers fail."""


def _drained(items: Sequence[Finish]) -> int:
    return sum(1 for i in items if i.outcome is None or i.outcome.error is None
               or i.outcome.error.code not in NOT_DRAINED)


class Ledger:
    def __init__(self, scripts: Scripts, config: SwitchyardConfig, consumer: str) -> None:
        self._scripts = scripts
        self._config = config
        self._consumer = consumer

    @staticmethod
    def _tenant(pulled: Pulled) -> str:
        """The tenant a client that tracks tenants counted the job under (the envelope
        carries that name; a key never written costs nothing to clear)."""
        return (pulled.envelope.tenant or DEFAULT_TENANT) if pulled.envelope else "-"

    def _finish_group(self, item: Finish) -> tuple[str, str, bool, str]:
        """Entries share a complete call when they share a stream, a reply stream, a mode
        and a tenant."""
        p = item.pulled
        reply = p.entry.reply if p.reply_owned else "-"
        return p.entry.stream, reply, bool(item.dead_reason), self._tenant(p)

    async def start(self, batch: Sequence[Pulled]) -> dict[int, str]:
        """Mark jobs running; verdicts by ``id(pulled)``: 'run', 'skip' (already ended) or
        'expired' (ended here, its caller told)."""
        groups, calls = self._start_calls(batch)
        return _verdicts(groups, await self._scripts.pipeline(calls))

    def _start_calls(self, batch: Sequence[Pulled]
                     ) -> tuple[list[list[Pulled]], list[ScriptCall]]:
        jobs = self._config.jobs
        groups = grouped(batch, lambda p: (p.entry.stream, p.entry.reply), PER_CALL)
        calls: list[ScriptCall] = []
        for group in groups:
            keys = [group[0].entry.stream, group[0].entry.reply, group[0].keys.held]
            args: list[str | int | float] = [
                GROUP, self._consumer, int(jobs.job_ttl_s * 1000), int(jobs.result_ttl_s * 1000),
                int(jobs.reply_ttl_s * 1000), jobs.reply_maxlen]
            for p in group:
                assert p.envelope is not None
                keys.append(p.job_key)
                args += [p.entry.entry_id, p.entry.job_id, p.envelope.deadline_ms or 0]
            calls.append(("start", keys, args))
        return groups, calls

    async def finish(self, items: Sequence[Finish], *, start: Sequence[Pulled] = ()
                     ) -> Finished:
        """Write outcomes (first result wins), reply, ack. ``start``: jobs to start first,
        in the same round trip (their verdicts in ``Finished.started``), for a batch the
        engine answered before its own ``start`` went out."""
        start_groups, calls = self._start_calls(start) if start else ([], [])
        groups = grouped(items, self._finish_group, PER_CALL)
        calls += [self._complete_call(group) for group in groups]
        replies = await self._scripts.pipeline(calls)
        started = _verdicts(start_groups, replies[:len(start_groups)])
        verdicts = [int(v) for reply in replies[len(start_groups):]
                    if isinstance(reply, list) for v in reply]
        dropped = tuple(i.pulled.entry.job_id for i, v in zip(
            (i for g in groups for i in g), verdicts, strict=True) if v == 2
        ) if 2 in verdicts else ()
        return Finished(written=verdicts.count(1), duplicates=len(dropped), dropped=dropped,
                        started=started)

    def _complete_call(self, group: Sequence[Finish]) -> ScriptCall:
        jobs = self._config.jobs
        first = group[0].pulled
        dead = bool(group[0].dead_reason)
        keys = [first.entry.stream, first.keys.drain(first.priority), first.keys.dead,
                first.entry.reply if first.reply_owned else first.keys.reply("-"),
                first.keys.tenant_jobs(self._tenant(first), first.priority)]
        args: list[str | int | float] = [
            GROUP, int(jobs.result_ttl_s * 1000), int(jobs.reply_ttl_s * 1000),
            jobs.reply_maxlen, jobs.dead_letter_maxlen, "dead" if dead else "ok",
            _drained(group), self._consumer]
        for item in group:
            p, outcome = item.pulled, item.outcome
            job_id = p.entry.job_id if p.owned else ""
            keys.append(p.job_key)
            args += [p.entry.entry_id, job_id, outcome.state.value if outcome else "",
                     outcome.model_dump_json() if outcome and job_id else ""]
            if dead:
                args += [item.dead_reason, p.entry.payload]
        return ("complete", keys, args)

    async def requeue(self, failed: Sequence[tuple[Pulled, str]]) -> list[str]:
        """Put back jobs whose run crashed the engine (``(pulled, why)``), attempts + 1;
        past the attempt limit they are dead-lettered and fail with ``engine_error``.
        Verdicts in order (see ``lua/requeue.lua``)."""
        calls = [requeue_call(self._config, p.keys, p.entry.stream, [p.entry.entry_id],
                              {p.entry.entry_id: p.entry}, "engine_error", why)
                 for p, why in failed]
        return [str(v) for reply in await self._scripts.pipeline(calls)
                if isinstance(reply, list) for v in reply]

    async def release(self, held: Sequence[Pulled]) -> None:
        """Hand entries read but never started back (to their retry lanes)."""
        calls: list[ScriptCall] = [
            ("release",
             [p.entry.stream, p.job_key, p.keys.retry_of(p.entry.stream),
              p.keys.held],
             [GROUP, p.entry.entry_id, p.entry.job_id, p.entry.reply, p.entry.payload])
            for p in held
        ]
        await self._scripts.pipeline(calls)


def _verdicts(groups: Sequence[Sequence[Pulled]], replies: Sequence[object]) -> dict[int, str]:
    """``start``'s verdicts by ``id(pulled)``."""
    verdicts: dict[int, str] = {}
    for group, reply in zip(groups, replies, strict=True):
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, list)
        verdicts.update(zip(map(id, group), map(str, reply), strict=True))
    return verdicts


def requeue_call(config: SwitchyardConfig, keys: PartitionKeys, stream: str,
                 ids: Sequence[str], found: dict[str, StreamEntry], code: str,
                 why: str) -> ScriptCall:
    """The ``requeue`` call for these entries of one stream (``found``: those read)."""
    jobs = config.jobs
    script_keys = [stream, keys.dead, keys.retry_of(stream), keys.held]
    args: list[str | int | float] = [
        GROUP, config.watchdog.max_attempts, code, _plain(why), int(jobs.result_ttl_s * 1000),
        int(jobs.reply_ttl_s * 1000), jobs.reply_maxlen, jobs.dead_letter_maxlen]
    for entry_id in ids:
        _add_entry(keys, entry_id, found.get(entry_id), script_keys, args)
    return ("requeue", script_keys, args)


def expire_call(config: SwitchyardConfig, keys: PartitionKeys, stream: str,
                entries: Sequence[StreamEntry]) -> ScriptCall:
    """The ``expire`` call for these undelivered entries of one stream."""
    jobs = config.jobs
    script_keys = [stream]
    args: list[str | int | float] = [GROUP, int(jobs.result_ttl_s * 1000),
                                     int(jobs.reply_ttl_s * 1000), jobs.reply_maxlen]
    for entry in entries:
        _add_entry(keys, entry.entry_id, entry, script_keys, args)
    return ("expire", script_keys, args)


def _add_entry(keys: PartitionKeys, entry_id: str, entry: StreamEntry | None,
               script_keys: list[str], args: list[str | int | float]) -> None:
    """An entry's job hash and reply stream (KEYS) and its id and job id (ARGV), as the
    watchdog's scripts take them. An id or reply stream not of this partition is not
    trusted: placeholders stand in."""
    job_id = entry.job_id if entry is not None and keys.owns(entry.job_id) else ""
    reply = entry.reply if entry is not None and keys.owns_reply(entry.reply) else ""
    script_keys += [keys.job(job_id or "-"), reply or keys.reply("-")]
    args += [entry_id, job_id]


def _plain(text: str) -> str:
    """Text safe to splice into the JSON the script writes."""
    return "".join(c for c in text if c not in '"\\' and c.isprintable())
