"""A worker's writes to Redis: start, finish (complete or dead-letter) and release jobs,
each a Lua script, many per round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.config import JobsConfig
from broker.keys import GROUP
from broker.schemas import ErrorInfo, JobOutcome, JobState, now_ms
from broker.scripts import ScriptCall, Scripts
from workers.puller import Pulled

__all__ = ["Finish", "Ledger"]


@dataclass(frozen=True)
class Finish:
    """How to finish one pulled entry: its outcome, and a dead-letter reason if any."""

    pulled: Pulled
    outcome: JobOutcome | None
    dead_reason: str = ""


def failure(job_id: str, state: JobState, code: str, message: str) -> JobOutcome:
    return JobOutcome(
        id=job_id, state=state, error=ErrorInfo(code=code, message=message), finished_ms=now_ms()
    )


class Ledger:
    def __init__(self, scripts: Scripts, jobs: JobsConfig, consumer: str) -> None:
        self._scripts = scripts
        self._jobs = jobs
        self._consumer = consumer

    async def start(self, batch: Sequence[Pulled]) -> tuple[list[Pulled], list[Pulled]]:
        """Mark jobs running. Returns (to run, expired); jobs that already ended drop out."""
        calls: list[ScriptCall] = []
        for p in batch:
            assert p.envelope is not None
            calls.append(("start", [p.keys.job(p.entry.job_id), p.entry.stream],
                          [GROUP, p.entry.entry_id, self._consumer, p.envelope.deadline_ms or 0,
                           int(self._jobs.job_ttl_s * 1000)]))
        verdicts = await self._scripts.pipeline(calls)
        run = [p for p, v in zip(batch, verdicts, strict=True) if v == "run"]
        expired = [p for p, v in zip(batch, verdicts, strict=True) if v == "expired"]
        return run, expired

    async def finish(self, items: Sequence[Finish]) -> list[bool]:
        """Write outcomes (first result wins), reply, ack. True where this call wrote it."""
        jobs = self._jobs
        calls: list[ScriptCall] = []
        for item in items:
            p = item.pulled
            job_id = p.entry.job_id if _owned(p, p.entry.job_id) else ""
            reply = p.entry.reply if p.entry.reply.startswith(p.keys.base + ":reply:") else ""
            outcome = item.outcome
            calls.append(("complete",
                          [p.entry.stream, p.keys.job(job_id or "-"), reply or p.keys.reply("-"),
                           p.keys.drain(p.priority), p.keys.dead],
                          [GROUP, p.entry.entry_id, job_id,
                           outcome.state.value if outcome else "",
                           outcome.model_dump_json() if outcome and job_id else "",
                           int(jobs.result_ttl_s * 1000), int(jobs.reply_ttl_s * 1000),
                           jobs.reply_maxlen, item.dead_reason,
                           p.entry.payload if item.dead_reason else "", jobs.dead_letter_maxlen]))
        return [r == 1 for r in await self._scripts.pipeline(calls)]

    async def release(self, held: Sequence[Pulled]) -> None:
        """Hand entries read but never started back to their streams."""
        calls: list[ScriptCall] = [
            ("release", [p.entry.stream, p.keys.job(p.entry.job_id)],
             [GROUP, p.entry.entry_id, p.entry.job_id, p.entry.reply, p.entry.payload])
            for p in held
        ]
        await self._scripts.pipeline(calls)


def _owned(pulled: Pulled, job_id: str) -> bool:
    """Whether a job id names the partition the entry was read from."""
    prefix = f"{pulled.keys.pool}.{pulled.keys.partition}."
    return job_id.startswith(prefix) and job_id[len(prefix):].isalnum()
