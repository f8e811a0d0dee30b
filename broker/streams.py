"""Stream plumbing: consumer groups, and raw stream replies parsed into typed entries."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from switchyard.broker.keys import GROUP, PartitionKeys
from switchyard.broker.scripts import Scripts

__all__ = ["AutoClaim", "PendingEntry", "StreamEntry", "deadline_of", "ensure_groups",
           "forget_consumer", "last_delivered", "parse_autoclaim", "parse_stream_reply",
           "pending_of", "read_entries"]


@dataclass(slots=True)
class StreamEntry:
    """One entry read from a stream. ``fields`` is empty for an entry deleted while pending;
    ``job_id``, ``reply`` and ``payload`` are its ``id``, ``r`` and ``d`` fields ('' if absent).

    Treat as read-only. Not ``frozen``: one is built per job read, and a frozen dataclass
    costs several times as much to build."""

    stream: str
    entry_id: str
    fields: dict[str, str] = field(default_factory=dict)
    job_id: str = field(init=False)
    reply: str = field(init=False)
    payload: str = field(init=False)

    def __post_init__(self) -> None:
        get = self.fields.get
        self.job_id, self.reply, self.payload = get("id", ""), get("r", ""), get("d", "")


def parse_stream_reply(reply: object) -> list[StreamEntry]:
    """Flatten an XREAD/XREADGROUP reply into entries, in stream then entry order."""
    if not reply:
        return []
    items: Iterable[tuple[object, object]]
    if isinstance(reply, dict):
        items = reply.items()
    elif isinstance(reply, list):
        items = ((pair[0], pair[1]) for pair in reply)
    else:
        raise TypeError(f"unexpected stream reply: {type(reply).__name__}")
    entries: list[StreamEntry] = []
    for stream, messages in items:
        for message in _messages(messages):
            entry_id, fields = message
            entries.append(StreamEntry(str(stream), str(entry_id), _fields(fields)))
    return entries


def _messages(messages: object) -> list[tuple[object, object]]:
    if not isinstance(messages, list | tuple):
        raise TypeError(f"unexpected stream messages: {type(messages).__name__}")
    return [(m[0], m[1]) for m in messages]


def _fields(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        pairs = iter(raw)
        fields = dict(zip(pairs, pairs, strict=False))
        if 2 * len(fields) == len(raw) and all(type(v) is str for v in raw):  # (text: as is)
            return fields
        return {str(raw[i]): str(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}
    raise TypeError(f"unexpected stream entry fields: {type(raw).__name__}")


async def ensure_groups(redis: aioredis.Redis, partitions: Iterable[PartitionKeys],
                        scripts: Scripts | None = None) -> None:
    """Create the consumer group on every priority stream; safe to call any number of
    times, and over maxmemory (``lua/groups.lua``). ``scripts``: the caller's own, if it
    has them (else a set of its own, which asks the server's version first)."""
    scripts = scripts or Scripts(redis)
    for keys in partitions:
        await scripts.call("groups", keys.streams(), [GROUP])


async def forget_consumer(redis: aioredis.Redis, partitions: Sequence[PartitionKeys],
                          consumer: str, scripts: Scripts | None = None) -> None:
    """Remove a consumer from its groups, but only where it holds nothing pending (checked
    and removed atomically, ``lua/forget.lua``)."""
    scripts = scripts or Scripts(redis)
    for keys in partitions:
        for stream in keys.streams():
            await scripts.call("forget", [stream], [GROUP, consumer])


async def last_delivered(redis: aioredis.Redis, stream: str, group: str) -> str | None:
    """The id of the last entry the group delivered ('0-0': none yet), or None when the
    stream or group does not exist."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return None
    for info in groups:
        if info.get("name") == group:
            return str(info.get("last-delivered-id", "0-0"))
    return None


async def read_entries(redis: aioredis.Redis, stream: str,
                       ids: Sequence[str]) -> dict[str, StreamEntry]:
    """These entries of one stream, by id, in one round trip (those deleted are absent)."""
    if not ids:
        return {}
    pipe = redis.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(stream, min=entry_id, max=entry_id)
    return {e.entry_id: e for raw in await pipe.execute() if raw
            for e in parse_stream_reply([[stream, raw]])}


_DEADLINE = re.compile(r'"deadline_ms":(\d+)')


def deadline_of(payload: str) -> int | None:
    """An envelope's deadline (ms), read without decoding the whole payload (None: none
    or unreadable; the first such field is the envelope's own, as it precedes the
    request, and field names inside strings are escaped)."""
    found = _DEADLINE.search(payload)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class PendingEntry:
    """One entry of a consumer group's pending list (XPENDING's extended form)."""

    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


async def pending_of(redis: aioredis.Redis, stream: str, group: str, consumer: str | None,
                     *, count: int = 1000, min_idle_ms: int = 0) -> list[PendingEntry]:
    """Pending entries of the group (of one consumer if given; idle at least
    ``min_idle_ms`` if given), oldest first; [] when the stream or group is missing."""
    try:
        raw: Any = await redis.xpending_range(stream, group, min="-", max="+", count=count,
                                              consumername=consumer,
                                              idle=min_idle_ms or None)
    except ResponseError as exc:
        if "NOGROUP" in str(exc) or "no such key" in str(exc):
            return []
        raise
    return [PendingEntry(str(r["message_id"]), str(r["consumer"]),
                         int(r["time_since_delivered"]), int(r["times_delivered"]))
            for r in raw or []]


@dataclass(frozen=True)
class AutoClaim:
    """XAUTOCLAIM's reply from Redis 6.2 or 7: where the scan goes on, and the entries
    claimed. An entry deleted while pending: Redis 7 drops it from the pending list and
    names it in ``deleted``; Redis 6.2 claims it anyway and answers ``(nil, nil)`` for
    it, so only ``claimed_deleted`` counts those (they stay pending on the claimer, which
    must ack them: see ``pending_of``)."""

    next_id: str
    claimed: list[StreamEntry]
    deleted: list[str]
    claimed_deleted: int = 0


def parse_autoclaim(stream: str, reply: object) -> AutoClaim:
    if not isinstance(reply, list | tuple) or len(reply) not in (2, 3):
        raise TypeError(f"unexpected XAUTOCLAIM reply: {reply!r}")
    raw = list(reply[1] or [])
    messages = [(m[0], m[1]) for m in raw if m is not None and m[0] is not None]
    claimed = parse_stream_reply([[stream, messages]]) if messages else []
    deleted = [str(i) for i in reply[2]] if len(reply) == 3 else []
    return AutoClaim(str(reply[0]), claimed, deleted, len(raw) - len(messages))
