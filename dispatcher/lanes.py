"""Where a plain admission goes, resolved once per (model, kind, priority, tenant): the
route, each partition's stream policy and reply stream, the priority's default deadline
and the spill threshold that deadline gives, and the name the tenant is counted under.

The enqueue path then finds all of it with one dictionary lookup a job, where it was a
dozen lookups and string builds (docs/architecture.md, issue 15). Nothing here is
dynamic: a route's liveness is asked of :class:`~switchyard.dispatcher.routing.Routing`
per job, and :meth:`Lanes.clear` drops everything when a tenant's counting changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.broker.calls import StreamPolicy
from switchyard.broker.config import ModelConfig, SwitchyardConfig
from switchyard.broker.keys import PartitionKeys
from switchyard.broker.schemas import Priority
from switchyard.dispatcher.errors import InvalidRequest
from switchyard.dispatcher.policies import Policies
from switchyard.dispatcher.routing import Routing
from switchyard.dispatcher.submitter import Enqueue, Submission, group_key

__all__ = ["Lane", "Lanes", "Part", "Planned", "spill_ms"]

MAX_LANES = 10_000
"""Lanes kept at most (many one-off tenants: the cache starts again)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One partition of a lane's pool: its keys, the stream policy of the lane's priority
    and tenant there, and the client's reply stream there."""

    keys: PartitionKeys
    policy: StreamPolicy
    reply: str
    group: str
    """The submitter's group of the lane's jobs here that carry no idempotency key and
    the default deadline (see ``submitter.py``)."""


@dataclass(frozen=True, slots=True)
class Lane:
    route: ModelConfig
    parts: tuple[Part, ...]
    """By partition index."""
    deadline_s: float
    """The priority's default start deadline ([jobs] deadline_s)."""
    spill_ms: int
    """The spill threshold of a job with that deadline (see :func:`spill_ms`)."""
    tenant: str | None
    """The name the envelope carries: the one the tenant is counted under (None: none
    given)."""


@dataclass(frozen=True, slots=True)
class Planned:
    """A plain admission, ready to send (see ``AsyncClient.direct_plan``): its entry, the
    submission as given, the start deadline it got (its own, or its priority's default),
    the admission retries it gets, and its route."""

    entry: Enqueue
    job: Submission
    deadline_s: float
    retries: int
    route: ModelConfig


def spill_ms(config: SwitchyardConfig, route: ModelConfig, deadline_s: float | None) -> int:
    """The predicted wait past which the route's own pool does not admit a job with this
    deadline (0: none): the pool's ``deadline_share`` of it."""
    pool = config.pools[route.pool]
    if deadline_s is None or not pool.admission_control:
        return 0
    return max(1, int(deadline_s * 1000 * pool.deadline_share))


class Lanes:
    def __init__(self, config: SwitchyardConfig, routing: Routing, policies: Policies,
                 client_id: str) -> None:
        self._config = config
        self._routing = routing
        self._policies = policies
        self._client_id = client_id
        self._lanes: dict[tuple[str, str, str, str | None], Lane] = {}
        self._spills: dict[tuple[str, float], int] = {}

    def get(self, model: str, kind: str, priority: Priority, tenant: str | None) -> Lane:
        """The lane of a checked submission's model, kind, priority and tenant. Raises
        ``UnknownModel``, or ``InvalidRequest`` (a model of another kind, a tenant
        ``[tenants] unknown = "reject"`` refuses); such calls leave nothing cached."""
        lane = self._lanes.get((model, kind, priority, tenant))
        if lane is None:
            lane = self._build(model, kind, priority, tenant)
            if len(self._lanes) >= MAX_LANES:
                self._lanes.clear()
            self._lanes[model, kind, priority, tenant] = lane
        return lane

    def part(self, lane: Lane, idempotency_key: str | None) -> Part:
        """The partition a job of the lane goes to (see ``Routing.index``)."""
        if len(lane.parts) == 1:
            return lane.parts[0]
        return lane.parts[self._routing.index(lane.route.pool, idempotency_key)]

    def spill(self, lane: Lane, deadline_s: float) -> int:
        """:func:`spill_ms` of a job with its own deadline (callers that send many with
        the same one, a batch's lines, look it up once)."""
        if deadline_s == lane.deadline_s:
            return lane.spill_ms
        key = (lane.route.pool, deadline_s)
        found = self._spills.get(key)
        if found is None:
            if len(self._spills) >= MAX_LANES:
                self._spills.clear()
            found = self._spills[key] = spill_ms(self._config, lane.route, deadline_s)
        return found

    def clear(self) -> None:
        self._lanes.clear()
        self._spills.clear()

    def _build(self, model: str, kind: str, priority: Priority, tenant: str | None) -> Lane:
        counted = None if tenant is None else self._policies.counted(tenant)
        if tenant is not None and counted is None:
            raise InvalidRequest(f"unknown tenant {tenant!r} ([tenants] unknown = "
                                 f'"reject")')
        route = self._routing.route(model, kind)
        pool = route.pool
        deadline_s: float = getattr(self._config.jobs.deadline_s, priority)
        spill = spill_ms(self._config, route, deadline_s)
        parts = []
        for index in range(self._config.pools[pool].partitions):
            keys = self._routing.partition_at(pool, index)
            policy = self._policies.get(pool, keys, priority, tenant)
            reply = keys.reply(self._client_id)
            parts.append(Part(keys, policy, reply, group_key(policy, reply, 0, spill, tenant)))
        return Lane(route, tuple(parts), deadline_s, spill, counted)
