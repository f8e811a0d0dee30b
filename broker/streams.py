"""Stream plumbing: consumer groups, and raw stream replies parsed into typed entries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from broker.keys import GROUP, PartitionKeys

__all__ = ["StreamEntry", "ensure_groups", "forget_consumer", "last_delivered",
           "parse_stream_reply"]


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
        return {str(raw[i]): str(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}
    raise TypeError(f"unexpected stream entry fields: {type(raw).__name__}")


async def ensure_groups(redis: aioredis.Redis, partitions: Iterable[PartitionKeys]) -> None:
    """Create the consumer group on every priority stream; safe to call any number of times."""
    for keys in partitions:
        for stream in keys.streams():
            try:
                await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise


async def forget_consumer(redis: aioredis.Redis, partitions: Sequence[PartitionKeys],
                          consumer: str) -> None:
    """Remove a consumer from its groups, but only where it holds nothing pending."""
    for keys in partitions:
        for stream in keys.streams():
            pending = await redis.xpending_range(stream, GROUP, min="-", max="+", count=1,
                                                 consumername=consumer)
            if not pending:
                await redis.xgroup_delconsumer(stream, GROUP, consumer)


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
