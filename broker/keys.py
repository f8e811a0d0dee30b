"""Every Redis key name Switchyard uses is built here, and nowhere else.

Layout (prefix ``sy`` by default; ``{pool.N}`` is the partition's hash tag, so every key
of one partition lands on one Redis Cluster slot)::

    sy:{pool.N}:q:<priority>        priority stream (consumer group ``workers``)
    sy:{pool.N}:retry:<priority>    its retry lane: entries re-queued after their worker
                                    died or hung, failed them, or handed them back; read
                                    before the priority stream (consumer group ``workers``)
    sy:{pool.N}:dead                dead-letter stream
    sy:{pool.N}:drain:<priority>    drain-rate window of one priority stream, and the
                                    scripts' counters for the exporter (hash; see
                                    ``broker/stats.py``)
    sy:{pool.N}:held                jobs workers prefetched and have not started
                                    (zset: job id -> ms held); see ``lua/hold.lua``
    sy:{pool.N}:job:<job id>        job record: state, outcome, stream entry (hash, TTL)
    sy:{pool.N}:idem:<tenant>:<key> idempotency key of one tenant ('-': none) -> job id
                                    (string, TTL); on the route's primary pool's
                                    partition whichever pool the job went to
    sy:{pool.N}:reply:<client id>   reply stream of one client instance (TTL, trimmed)
    sy:{pool.N}:tenant:<name>:jobs:<priority>
                                    a tenant's jobs in flight in one priority stream
                                    (zset: job id -> deadline ms)
    sy:{pool.N}:tenant:<name>:quota a tenant's request and token buckets (hash)
    sy:{pool.N}:tenants:seen        tenants seen lately: name -> last seen ms (zset)
    sy:{pool.N}:tenants:weight      their weights: name -> weight, '~sum' -> the total (hash)
    sy:{pool}:workers               live workers of a pool (zset: consumer -> last beat ms)
    sy:{pool}:worker:<consumer>     a worker's heartbeat and description (hash, TTL)
    sy:{apikeys}                    the gateway's run-time API keys: SHA-256 of the key ->
                                    its record (JSON: tenant, created, expires); see
                                    ``broker/apikeys.py``

A job id is ``<pool>.<partition>.<24 hex>``, so any process can find a job's keys
without a lookup.

Partitions on a Redis Cluster: ``{pool.N}`` above stands for the partition's hash tag,
:func:`partition_tag`. Partition 0's is ``pool.0``; each further partition's tag is
``pool.N``, or ``pool.N~<k>`` with the smallest k that puts it in the twelfth of the
16,384 slots chosen for it: the twelfths are chosen so the partitions, taken in order,
fall as evenly as they can over 2, 3, 4, 6 or 12 masters holding equal runs of slots (as
``redis-cli --cluster create`` deals them). So 3 partitions on 3 masters land one on
each, 4 on 2 two on each; the tags depend on the pool's name and N only, never on the
partition count or the cluster, and a single partition's keys are as they always were.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from functools import cache, cached_property

from redis.crc import key_slot

from switchyard.broker.errors import JobIdError
from switchyard.broker.schemas import PRIORITIES, Priority

__all__ = [
    "GROUP",
    "POOL_NAME",
    "TENANT_NAME",
    "JobId",
    "JobIdSource",
    "Keys",
    "PartitionKeys",
    "PoolKeys",
    "partition_tag",
]

GROUP = "workers"
"""The consumer group every worker of a pool reads its streams through."""

POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


@dataclass(frozen=True)
class JobId:
    """A parsed job id: which pool and partition the job lives in."""

    pool: str
    partition: int
    token: str

    def __str__(self) -> str:
        return f"{self.pool}.{self.partition}.{self.token}"

    @classmethod
    def new(cls, pool: str, partition: int) -> JobId:
        return cls(pool, partition, secrets.token_hex(12))


    @classmethod
    def parse(cls, job_id: str) -> JobId:
        parts = job_id.split(".")
        if (
            len(parts) != 3
            or not POOL_NAME.match(parts[0])
            or not parts[1].isdigit()
            or not parts[2].isalnum()
        ):
            raise JobIdError(f"not a Switchyard job id: {job_id!r}")
        return cls(parts[0], int(parts[1]), parts[2])


class JobIdSource:
    """New job ids as strings, for one client: 96 random bits each, like
    :meth:`JobId.new`, but read from the OS in bulk rather than one call per job. A forked
    child refills its own buffer, so parent and child never share ids."""

    _BATCH = 512

    def __init__(self) -> None:
        self._random = ""
        """Hex digits, 24 a job id."""
        self._at = 0
        self._pid = 0

    def new(self, pool: str, partition: int) -> str:
        if self._at >= len(self._random) or self._pid != os.getpid():
            self._random, self._at = os.urandom(12 * self._BATCH).hex(), 0
            self._pid = os.getpid()
        at = self._at
        self._at = at + 24
        return f"{pool}.{partition}.{self._random[at:at + 24]}"


SLOTS = 16384
_SPREAD = (2, 3, 4, 6, 12)
"""Master counts whose equal slot runs the partition tags balance over exactly."""


def _twelfth(tag: str) -> int:
    return key_slot(tag.encode()) * 12 // SLOTS


@cache
def _twelfths(pool: str, count: int) -> tuple[int, ...]:
    """The twelfths of the slot space chosen for partitions 0..count-1: partition 0's is
    where ``pool.0`` falls; each next one the twelfth that keeps every master count of
    ``_SPREAD`` most even (fewest partitions already in its run, nearest after 0's)."""
    chosen = [_twelfth(f"{pool}.0")]
    for _ in range(1, count):
        def crowding(t: int) -> tuple[int, int, int]:
            shared = [sum(1 for c in chosen if c * m // 12 == t * m // 12) for m in _SPREAD]
            return sum(shared), max(shared), (t - chosen[0]) % 12
        chosen.append(min(range(12), key=crowding))
    return tuple(chosen)


@cache
def partition_tag(pool: str, partition: int) -> str:
    """The hash tag of one partition (see the module doc); slot placement for a Redis
    Cluster, the same keys on a single server."""
    if partition == 0:
        return f"{pool}.0"
    want = _twelfths(pool, partition + 1)[partition]
    k = 0
    while True:
        tag = f"{pool}.{partition}" if k == 0 else f"{pool}.{partition}~{k}"
        slot = key_slot(tag.encode())
        # in the middle half of the twelfth: clear of where equal runs may split it
        if slot * 12 // SLOTS == want and 0.25 <= slot * 12 / SLOTS - want <= 0.75:
            return tag
        k += 1


@dataclass(frozen=True)
class PartitionKeys:
    """The keys of one partition of one pool; all share the partition's hash tag."""

    prefix: str
    pool: str
    partition: int

    @cached_property
    def base(self) -> str:
        return f"{self.prefix}:{{{partition_tag(self.pool, self.partition)}}}"

    def stream(self, priority: Priority) -> str:
        return f"{self.base}:q:{priority}"

    def retry(self, priority: Priority) -> str:
        return f"{self.base}:retry:{priority}"

    def queues(self) -> list[str]:
        """The priority streams (where jobs are admitted), highest priority first."""
        return [self.stream(p) for p in PRIORITIES]

    def streams(self) -> list[str]:
        """Every stream workers read: highest priority first, each retry lane before its
        priority stream."""
        return [s for p in PRIORITIES for s in (self.retry(p), self.stream(p))]

    def priority_of(self, stream: str) -> Priority:
        """The priority of a priority stream or of its retry lane."""
        for p in PRIORITIES:
            if stream in (self.stream(p), self.retry(p)):
                return p
        raise KeyError(stream)

    def retry_of(self, stream: str) -> str:
        """The retry lane for entries of ``stream`` (a priority stream or a retry lane)."""
        return self.retry(self.priority_of(stream))

    @property
    def dead(self) -> str:
        return f"{self.base}:dead"

    def drain(self, priority: Priority) -> str:
        return f"{self.base}:drain:{priority}"

    @property
    def held(self) -> str:
        return f"{self.base}:held"

    def job(self, job_id: str) -> str:
        return f"{self.base}:job:{job_id}"

    def owns(self, job_id: str) -> bool:
        """Whether a job id names this partition (only such ids build keys or are spliced
        into outcomes: an entry's id field is not trusted)."""
        token = job_id.removeprefix(f"{self.pool}.{self.partition}.")
        return token != job_id and token.isascii() and token.isalnum()

    def owns_reply(self, stream: str) -> bool:
        """Whether a reply stream is one of this partition's."""
        return stream.startswith(self.base + ":reply:")

    def idempotency(self, tenant: str | None, key: str) -> str:
        """A tenant's idempotency key: tenants never share one (a tenant name has no ':')."""
        return f"{self.base}:idem:{tenant or '-'}:{key}"

    def reply(self, client_id: str) -> str:
        return f"{self.base}:reply:{client_id}"

    def tenant_jobs(self, tenant: str, priority: Priority) -> str:
        return f"{self.base}:tenant:{tenant}:jobs:{priority}"

    def tenant_quota(self, tenant: str) -> str:
        return f"{self.base}:tenant:{tenant}:quota"

    @property
    def tenants_seen(self) -> str:
        return f"{self.base}:tenants:seen"

    @property
    def tenant_weights(self) -> str:
        return f"{self.base}:tenants:weight"


@dataclass(frozen=True)
class PoolKeys:
    """Keys of a pool as a whole (worker registry), outside any partition."""

    prefix: str
    pool: str

    @property
    def workers(self) -> str:
        return f"{self.prefix}:{{{self.pool}}}:workers"

    def worker(self, consumer: str) -> str:
        return f"{self.prefix}:{{{self.pool}}}:worker:{consumer}"


@dataclass(frozen=True)
class Keys:
    """The project's key space under one prefix."""

    prefix: str = "sy"

    def partition(self, pool: str, partition: int) -> PartitionKeys:
        return PartitionKeys(self.prefix, pool, partition)

    def partitions(self, pool: str, count: int) -> list[PartitionKeys]:
        return [self.partition(pool, n) for n in range(count)]

    def of_job(self, job_id: str) -> PartitionKeys:
        parsed = JobId.parse(job_id)
        return self.partition(parsed.pool, parsed.partition)

    def breaker(self, provider: str, model: str) -> str:
        """A provider target's circuit breaker (a hash), shared by every bridge process;
        its own hash tag, so its single-key scripts work on Redis Cluster."""
        return f"{self.prefix}:{{breaker:{provider}:{model}}}"

    @property
    def spend(self) -> str:
        """USD spent at providers: a hash of ``provider:<name>`` and ``tenant:<name>``."""
        return f"{self.prefix}:{{spend}}"

    def rate_limit(self, provider: str) -> str:
        """A provider's shared request/token buckets and header-driven pause (a hash)."""
        return f"{self.prefix}:{{ratelimit:{provider}}}"

    @property
    def api_keys(self) -> str:
        """The gateway's run-time API keys, by digest (a hash; never a key itself)."""
        return f"{self.prefix}:{{apikeys}}"

    def batch(self, batch_id: str) -> str:
        """A batch's record (a hash); its lease shares its hash tag."""
        return f"{self.prefix}:{{{batch_id}}}:batch"

    def batch_lease(self, batch_id: str) -> str:
        """The token of the batch worker running a batch, while its lease holds."""
        return f"{self.prefix}:{{{batch_id}}}:lease"

    def batch_resume(self, batch_id: str) -> str:
        """Set while a batch worker hands a lapsed batch to rq again (one hand-over)."""
        return f"{self.prefix}:{{{batch_id}}}:resume"

    def batches_of(self, tenant: str) -> str:
        """A tenant's batches (a zset: batch id -> created, ms), newest last."""
        return f"{self.prefix}:{{batches}}:tenant:{tenant}"

    @property
    def batches_running(self) -> str:
        """Batches a worker runs (a zset: batch id -> when its lease lapses, ms)."""
        return f"{self.prefix}:{{batches}}:running"

    def pool(self, pool: str) -> PoolKeys:
        return PoolKeys(self.prefix, pool)
