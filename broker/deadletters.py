"""Dead letters: list, replay and purge them (``switchyard dlq``).

An entry lands on its partition's dead-letter stream when it cannot be served (it does
not decode, or names a model or partition not its pool's) or has used up its attempts;
its job failed where its caller saw it. A dead letter keeps the raw payload and the
reason. Replaying one re-adds it to its priority stream as a fresh attempt under the same
job id (attempts reset, the deadline moved by the time it had left at first);
purging deletes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from switchyard.broker.errors import EntryDecodeError
from switchyard.broker.keys import PartitionKeys
from switchyard.broker.schemas import decode_envelope, now_ms
from switchyard.broker.scripts import Scripts
from switchyard.broker.streams import parse_stream_reply

__all__ = ["DeadLetter", "list_dead", "purge", "replay"]


@dataclass(frozen=True)
class DeadLetter:
    keys: PartitionKeys
    entry_id: str
    """Its id in the dead-letter stream."""
    job_id: str
    source: str
    """The priority stream it came from."""
    reason: str
    reply: str
    payload: str

    @property
    def ref(self) -> str:
        """How the CLI names it: ``<pool>.<partition>/<entry id>``."""
        return f"{self.keys.pool}.{self.keys.partition}/{self.entry_id}"


async def list_dead(redis: aioredis.Redis, partitions: Iterable[PartitionKeys], *,
                    limit: int = 100) -> list[DeadLetter]:
    """The oldest dead letters of these partitions, at most ``limit`` per partition."""
    found: list[DeadLetter] = []
    for keys in partitions:
        raw = await redis.xrange(keys.dead, count=limit)
        for e in parse_stream_reply([[keys.dead, raw]]) if raw else []:
            get = e.fields.get
            found.append(DeadLetter(keys, e.entry_id, get("job", ""), get("source", ""),
                                    get("reason", ""), get("r", ""), get("d", "")))
    return found


def _fresh(letter: DeadLetter) -> str:
    """The payload of a fresh attempt (raises EntryDecodeError if it cannot be one)."""
    envelope = decode_envelope(letter.payload)
    if envelope.id != letter.job_id or not letter.keys.owns(letter.job_id):
        raise EntryDecodeError(f"job id {letter.job_id!r} does not match its payload")
    now = now_ms()
    budget = None if envelope.deadline_ms is None else envelope.deadline_ms - envelope.created_ms
    fresh = envelope.model_copy(update={
        "attempts": 0, "created_ms": now,
        "deadline_ms": None if budget is None else now + max(budget, 1_000)})
    return fresh.model_dump_json()


async def replay(scripts: Scripts, letters: Sequence[DeadLetter],
                 job_ttl_ms: int) -> dict[str, str]:
    """Replay each; by ref: the new entry id, or why it was not replayed."""
    done: dict[str, str] = {}
    for letter in letters:
        try:
            stream = letter.keys.stream(letter.keys.priority_of(letter.source))
            payload = _fresh(letter)
        except (KeyError, EntryDecodeError) as exc:
            done[letter.ref] = f"not replayable: {exc}"
            continue
        reply = letter.reply if letter.keys.owns_reply(letter.reply) else letter.keys.reply("-")
        new = await scripts.call(
            "replay", [letter.keys.dead, stream, letter.keys.job(letter.job_id)],
            [letter.entry_id, letter.job_id, reply, payload, job_ttl_ms])
        done[letter.ref] = f"replayed as {new}" if new else "gone"
    return done


async def purge(redis: aioredis.Redis, letters: Sequence[DeadLetter]) -> int:
    """Delete these dead letters; how many were still there."""
    removed = 0
    for letter in letters:
        removed += int(await redis.xdel(letter.keys.dead, letter.entry_id))
    return removed


