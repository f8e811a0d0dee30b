"""The asynchronous enqueue API. :class:`switchyard.dispatcher.sync.Client` wraps it for sync
code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import replace
from typing import Self, TypeVar

from switchyard.broker.calls import StreamPolicy, settle_call
from switchyard.broker.config import ModelConfig, SwitchyardConfig, load_config
from switchyard.broker.durability import DurabilityProbe
from switchyard.broker.errors import (
    REDIS_FAILURES,
    BrokerUnavailable,
    UnsafeEvictionPolicy,
    redis_failure,
)
from switchyard.broker.eviction import check_eviction_policy
from switchyard.broker.jobs import read_job
from switchyard.broker.keys import JobIdSource, Keys, PartitionKeys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.schemas import (
    ChatMessage,
    ChatResult,
    EmbedResult,
    JobEnvelope,
    Priority,
    now_ms,
)
from switchyard.broker.scripts import Scripts
from switchyard.broker.settings import RedisSettings
from switchyard.broker.wire import Wire
from switchyard.dispatcher.admission import (
    Admitted,
    Duplicate,
    Reserved,
    TenantRefused,
    Verdict,
    parse_admission,
)
from switchyard.dispatcher.errors import AdmissionRejected, InvalidRequest
from switchyard.dispatcher.jobs import AnyResult, AsyncJob, R
from switchyard.dispatcher.lanes import Lanes, Planned, spill_ms
from switchyard.dispatcher.limits import check_options
from switchyard.dispatcher.policies import Policies
from switchyard.dispatcher.rejections import rejection
from switchyard.dispatcher.replies import Deltas, ReplyRouter
from switchyard.dispatcher.routing import Routing
from switchyard.dispatcher.submissions import (
    chat_submission,
    embed_submission,
    request_tokens,
    wants_deltas,
)
from switchyard.dispatcher.submitter import Enqueue, Submission, Submitter

__all__ = ["AsyncClient"]

T = TypeVar("T")
_log = logging.getLogger(__name__)
DEFAULT_BATCH_RETRIES = 3
"""Admission retries of a ``batch`` job when the caller does not say."""


class _StaleKey(Exception):
    """An idempotency key that names a job no longer in Redis (or a reservation whose
    submitter is gone): cleared, then the admit is tried again."""

    def __init__(self, job_id: str, *, reserved: bool) -> None:
        super().__init__(job_id)
        self.job_id, self.reserved = job_id, reserved


class AsyncClient:
    """Enqueue inference work and collect its results.

    One instance owns one reply stream per partition and one reader task; share it across
    the coroutines of a process rather than making one per request.
    """

    def __init__(
        self, config: SwitchyardConfig | None = None, *, redis_url: str | None = None
    ) -> None:
        self.config = config if config is not None else load_config()
        self.settings = RedisSettings.from_url(resolve_redis_url(self.config, redis_url))
        timeout = self.config.redis.timeout_s
        self.redis = self.settings.connect(connect_timeout_s=timeout, pool_timeout_s=timeout)
        self.keys = Keys(self.config.redis.prefix)
        # The enqueue path's connection (see broker/wire.py): it answers or fails every
        # call within timeout_s, so a plain admission needs no timer of its own.
        self._wire = Wire.of(self.redis, timeout_s=timeout)
        self.scripts = Scripts(self.redis, wire=self._wire)
        self.client_id = secrets.token_hex(8)
        self.replies = ReplyRouter(self.redis, lambda job_id: self.keys.of_job(job_id).job(job_id),
                                   wire=Wire.of(self.redis, timeout_s=timeout + 1.0))
        self._submitter = Submitter(self.scripts, int(self.config.redis.timeout_s * 1000))
        self._durability = DurabilityProbe(self.redis)
        self._job_ids = JobIdSource()
        self._routing = Routing(self.config, self.keys, self.redis)
        self._policies = Policies(self.config)
        self._lanes = Lanes(self.config, self._routing, self._policies, self.client_id)
        self._eviction_checked = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Finish sending what was submitted, stop reading replies, drop the reply streams
        (they expire on their own otherwise); each step bounded by ``[redis] timeout_s``,
        so closing never hangs on a Redis that went silent."""
        limit = self.config.redis.timeout_s
        for step in (self._submitter.aclose, self.replies.aclose):
            with contextlib.suppress(*REDIS_FAILURES, TimeoutError):
                await asyncio.wait_for(step(), limit)
        if self._wire is not None:
            await self._wire.aclose()
        await self.scripts.aclose()
        await self.redis.aclose()

    def own_bucket(self, tenant: str) -> None:
        """Count an unconfigured tenant under its own name, with ``[tenants.default]``'s
        quotas (else it shares the one ``default`` bucket). For names an operator made,
        such as the tenants of the gateway's run-time API keys; never for a caller's."""
        self._policies.own.add(tenant)
        self._lanes.clear()

    async def live_pools(self) -> list[str]:
        """The configured pools that have a live worker (heartbeats checked once a second)."""
        return [name for name in self.config.pools if await self._routing.alive(name)]

    def job(self, job_id: str, *, tenant: str | None = None) -> AsyncJob[AnyResult]:
        """A handle on any job by id, from any process (raises JobIdError if malformed).
        With ``tenant``, only that tenant's jobs are found: the handle's calls raise
        ``JobNotFound`` for another's. ``tenant=None`` is a trusted caller (see the
        README's trust model): it sees every job."""
        self.keys.of_job(job_id)
        return AsyncJob(self, job_id, (EmbedResult, ChatResult), tenant=tenant)

    async def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        priority: Priority = "standard",
        deadline_s: float | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        max_retries: int | None = None,
        durable: bool = False,
    ) -> AsyncJob[EmbedResult]:
        """Enqueue an embedding job; ``input`` is one text or a list of texts.
        ``max_retries`` and ``durable``: see :meth:`chat`."""
        job = embed_submission(self.config.limits, model, input, priority, deadline_s,
                               idempotency_key, tenant, durable)
        return await self.submit(job, EmbedResult, max_retries)

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage | Mapping[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream: bool = False,
        priority: Priority = "standard",
        deadline_s: float | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        max_retries: int | None = None,
        durable: bool = False,
    ) -> AsyncJob[ChatResult]:
        """Enqueue a chat generation job. ``messages``: ``{"role", "content"}`` mappings
        (roles system, user, assistant). With ``stream=True``, ``async for delta in job``
        yields the text as it is generated. ``temperature=0`` decodes greedily.

        Rejected at admission, the call retries up to ``max_retries`` times (default: 3 for
        ``batch``, none otherwise), each after the rejection's ``retry_after`` plus up to
        20 % jitter, never past ``deadline_s``; then it raises the last rejection.

        ``durable=True``: return only once the job is in Redis's AOF on disk (WAITAOF on
        Redis 7.2+; older servers must run ``appendfsync always``), else raise
        ``DurabilityUnavailable``. Without it a Redis crash may lose about the last second
        of admitted jobs (AOF ``everysec``)."""
        job = chat_submission(
            self.config.limits, model, messages, max_tokens=max_tokens,
            temperature=temperature, top_p=top_p, stop=stop, seed=seed, stream=stream,
            priority=priority, deadline_s=deadline_s, idempotency_key=idempotency_key,
            tenant=tenant, durable=durable)
        return await self.submit(job, ChatResult, max_retries)

    async def submit(self, job: Submission, kind: type[R],
                     max_retries: int | None) -> AsyncJob[R]:
        """Admit a checked submission (see :mod:`~switchyard.dispatcher.submissions`),
        retrying rejections (see :meth:`chat`)."""
        planned = None if self._wire is None else self.direct_plan(job, max_retries,
                                                                   self._job_ids)
        if planned is not None:
            # The hot path: a plain admission is one ``enqueue`` on the wire, which answers
            # or fails it within ``timeout_s`` (no timer of its own). No handle: the
            # general path takes the call, from the start (nothing was admitted, or the
            # idempotency key finds the job).
            entry, handle = planned.entry, None
            waiter, deltas = self.replies.expect(entry.job_id, entry.reply,
                                                 deltas=wants_deltas(job.request))
            try:
                verdict = parse_admission(await self._submitter.submit(entry))
                handle = self.direct_handle(verdict, planned, kind, waiter, deltas)
            except REDIS_FAILURES as exc:
                raise redis_failure(self.settings.display(), exc) from exc
            finally:
                if handle is None:
                    self.replies.forget(entry.job_id)
            if handle is not None:
                return handle
        job, retries = self._checked(job, max_retries)
        started = time.monotonic()
        for attempt in range(retries + 1):
            try:
                return await self._admit_in_time(job, kind)
            except AdmissionRejected as rejected:
                wait = rejected.retry_after * (1 + 0.2 * random.random())
                spent = time.monotonic() - started
                if attempt == retries or (job.deadline_s is not None
                                          and spent + wait >= job.deadline_s):
                    raise
                await asyncio.sleep(wait)
                if job.deadline_s is not None:  # the deadline stays where it was
                    left = job.deadline_s - (time.monotonic() - started)
                    if left <= 0:  # the sleep ran past it: this rejection is the answer
                        raise
                    job = replace(job, deadline_s=left)
                    started = time.monotonic()
        raise AssertionError("unreachable")

    def _checked(self, job: Submission, max_retries: int | None) -> tuple[Submission, int]:
        """The submission with its options checked and its priority's default deadline
        filled in; and the admission retries it gets."""
        check_options(job, max_retries)
        if job.tenant is not None and self._policies.counted(job.tenant) is None:
            raise InvalidRequest(f"unknown tenant {job.tenant!r} ([tenants] unknown = "
                                 f'"reject")')
        retries = max_retries if max_retries is not None else (
            DEFAULT_BATCH_RETRIES if job.priority == "batch" else 0)
        if job.deadline_s is None:  # its priority's default
            job = Submission(job.model, job.request, job.priority,
                             getattr(self.config.jobs.deadline_s, job.priority),
                             job.idempotency_key, job.tenant, job.durable)
        return job, retries

    async def _admit_in_time(self, job: Submission, kind: type[R]) -> AsyncJob[R]:
        """:meth:`_admit`, failing with ``BrokerUnavailable`` when Redis errs, or has not
        answered within ``[redis] timeout_s`` or the job's deadline, whichever is sooner.
        (A submission that timed out may still have been admitted: retry it with the
        same ``idempotency_key`` to find out without enqueuing it twice.)"""
        limit = self.config.redis.timeout_s
        if job.deadline_s is not None:
            limit = min(limit, job.deadline_s)
        if not self._eviction_checked:
            self._eviction_checked = True
            await self.bounded(self._warn_if_evicting(), limit)
        return await self.bounded(self._admit(job, kind), limit)

    async def _warn_if_evicting(self) -> None:
        """A client cannot refuse to start as workers do: it says so, loudly, once."""
        try:
            await check_eviction_policy(self.redis, self.settings.display())
        except UnsafeEvictionPolicy as exc:
            _log.warning("%s", exc)

    async def bounded(self, op: Awaitable[T], limit: float | None = None) -> T:
        """``op``, a Redis call, failing with ``BrokerUnavailable`` when Redis errs or has
        not answered within ``limit`` (default ``[redis] timeout_s``)."""
        limit = self.config.redis.timeout_s if limit is None else limit
        try:
            async with asyncio.timeout(limit):  # (cheaper than wait_for: no task per call)
                return await op
        except TimeoutError:
            raise BrokerUnavailable(f"Redis at {self.settings.display()} did not answer "
                                    f"within {limit:g} s") from None
        except REDIS_FAILURES as exc:
            raise redis_failure(self.settings.display(), exc) from exc

    async def _admit(self, job: Submission, kind: type[R]) -> AsyncJob[R]:
        """Admit the job on the model's pool; with an ``overflow`` pool in its route, on the
        overflow instead when the pool has no live worker, is full, or predicts a wait
        past the job's deadline. Where no pool is left, reject: ``pool_full`` or
        ``deadline_unmeetable``.

        An idempotency key lives on the route's primary pool's partition whichever pool
        admits the job, so a retry finds it wherever the first attempt went; a key whose
        job is gone (expired) is cleared and the job admitted again."""
        route = self._routing.route(job.model, job.request.kind)
        key = self._key_on(route, job)
        for _ in range(3):
            try:
                return await self._admit_on(route, job, kind, key)
            except _StaleKey as stale:
                assert key is not None
                await self.scripts.call(*settle_call(key, stale.job_id, reserved=stale.reserved))
        raise BrokerUnavailable(f"idempotency key {job.idempotency_key!r} keeps changing hands")

    async def _admit_on(self, route: ModelConfig, job: Submission, kind: type[R],
                        key: str | None) -> AsyncJob[R]:
        pools = [route.pool]
        if route.overflow is not None:
            alive = await self._routing.alive(route.pool)
            pools = [*([route.pool] if alive else []), route.overflow]
        spill = spill_ms(self.config, route, job.deadline_s)
        for pool_name in pools:
            if key is not None and pool_name != route.pool:
                verdict, handle = await self._reserve_and_enqueue(pool_name, job, kind, key)
            else:
                verdict, handle = await self._enqueue(pool_name, job, kind, spill, key)
            if handle is not None:
                return handle
            # A tenant over its quota is not let through to a costlier pool.
            if pool_name == pools[-1] or isinstance(verdict, TenantRefused):
                assert not isinstance(verdict, Admitted | Duplicate | Reserved)
                raise rejection(self.config, job.model, pool_name, job.priority, verdict,
                                job.deadline_s)
        raise AssertionError("no pool to admit on")

    def _key_on(self, route: ModelConfig, job: Submission) -> str | None:
        """The job's idempotency key, on its route's primary pool's partition (None: no
        key; no partition is drawn then, so round robin is not advanced for nothing)."""
        if job.idempotency_key is None:
            return None
        home = self._routing.partition(route.pool, job.idempotency_key)
        return home.idempotency(job.tenant, job.idempotency_key)

    def direct_plan(self, job: Submission, max_retries: int | None, ids: JobIdSource
                    ) -> Planned | None:
        """For the plain-admission paths (:meth:`submit`, and the sync client's
        ``direct.py``, from its own thread with its own ``ids``): the submission's entry,
        checked, when its first admission attempt is one ``enqueue`` on its route's own
        pool and needs nothing but that call; None when the general path must take it (a
        durable job, a route with an overflow pool not known to be alive, a deadline
        shorter than ``[redis] timeout_s``, the client's first call)."""
        check_options(job, max_retries)
        lane = self._lanes.get(job.model, job.request.kind, job.priority, job.tenant)
        route = lane.route
        deadline_s = lane.deadline_s if job.deadline_s is None else job.deadline_s
        if job.durable or not self._eviction_checked or (
                route.overflow is not None and not self._routing.known_alive(route.pool)) or (
                deadline_s < self.config.redis.timeout_s):
            return None
        part = self._lanes.part(lane, job.idempotency_key)
        if job.idempotency_key is None and job.deadline_s is None:
            entry = self._entry_on(part.keys, part.policy, part.reply, job, deadline_s,
                                   lane.spill_ms, None, lane.tenant, ids.new(route.pool,
                                                                             part.keys.partition),
                                   group=part.group)
        else:
            key = None if job.idempotency_key is None else part.keys.idempotency(
                job.tenant, job.idempotency_key)
            entry = self._entry_on(part.keys, part.policy, part.reply, job, deadline_s,
                                   self._lanes.spill(lane, deadline_s), key, lane.tenant,
                                   ids.new(route.pool, part.keys.partition))
        retries = max_retries if max_retries is not None else (
            DEFAULT_BATCH_RETRIES if job.priority == "batch" else 0)
        return Planned(entry, job, deadline_s, retries, route)

    def direct_handle(self, verdict: Verdict, planned: Planned, kind: type[R],
                      waiter: asyncio.Future[str], deltas: Deltas | None) -> AsyncJob[R] | None:
        """The fast path's answer: the admitted job's handle; the rejection when the async
        path would raise it too (no retries, no other pool to try); else None (the async
        path takes the call, from the start)."""
        job = planned.job
        if isinstance(verdict, Admitted):
            return self._admitted(verdict, planned.entry.job_id, job.tenant, planned.deadline_s,
                                  kind, waiter, deltas)
        if isinstance(verdict, Duplicate | Reserved) or planned.retries:
            return None
        if planned.route.overflow is not None and not isinstance(verdict, TenantRefused):
            return None
        raise rejection(self.config, job.model, planned.route.pool, job.priority, verdict,
                        planned.deadline_s)

    async def _reserve_and_enqueue(self, pool_name: str, job: Submission, kind: type[R],
                                   key: str) -> tuple[Verdict, AsyncJob[R] | None]:
        """Admit on a pool other than the key's home: reserve the key there first (another
        hash slot, so not in the same script), then fill it, or drop it if not admitted."""
        job_id = self._job_ids.new(pool_name, self._routing.index(pool_name, job.idempotency_key))
        ttl_ms = int(self.config.jobs.idempotency_ttl_s * 1000)
        reply = await self.scripts.call("reserve", [key], [job_id, ttl_ms])
        if reply != ["held"]:  # the key names a job already
            held = parse_admission(reply)
            return held, await self._existing(held, kind, job.tenant)
        try:
            verdict, handle = await self._enqueue(pool_name, job, kind, 0, None, job_id)
        except BaseException:
            with contextlib.suppress(*REDIS_FAILURES):  # a retry finds the reservation
                await self.scripts.call(*settle_call(key, job_id))
            raise
        await self.scripts.call(*settle_call(key, job_id, fill_ttl_ms=ttl_ms if handle else 0))
        return verdict, handle

    async def _existing(self, verdict: Verdict, kind: type[R],
                        tenant: str | None) -> AsyncJob[R]:
        """The job an idempotency key already names; ``_StaleKey`` when it is gone."""
        assert isinstance(verdict, Duplicate | Reserved)
        record = await read_job(self.redis, self.keys.of_job(verdict.job_id), verdict.job_id)
        if record is not None:
            return AsyncJob(self, verdict.job_id, kind, tenant=tenant)
        if isinstance(verdict, Reserved):
            if verdict.age_ms < 2_000 * self.config.redis.timeout_s:
                raise BrokerUnavailable("another submission with this idempotency key is "
                                        "being admitted; retry")
            raise _StaleKey(verdict.job_id, reserved=True)
        raise _StaleKey(verdict.job_id, reserved=False)

    async def _enqueue(
        self, pool_name: str, job: Submission, kind: type[R], spill: int,
        idempotency_key: str | None, job_id: str | None = None,
    ) -> tuple[Verdict, AsyncJob[R] | None]:
        """One admission attempt on one pool: (verdict, the job's handle if admitted)."""
        fsync = job.durable and await self._durability.waits()
        entry = self._entry(pool_name, job, spill, idempotency_key, job_id, fsync)
        waiter, deltas = self.replies.expect(entry.job_id, entry.reply,
                                             deltas=wants_deltas(job.request))
        try:
            verdict = parse_admission(await self._submitter.submit(entry))
        except BaseException:  # unavailable, timed out (cancelled), or a Redis error
            self.replies.forget(entry.job_id)
            raise
        if isinstance(verdict, Admitted):
            return verdict, self._admitted(verdict, entry.job_id, job.tenant, job.deadline_s,
                                           kind, waiter, deltas)
        self.replies.forget(entry.job_id)
        if isinstance(verdict, Duplicate | Reserved):
            return verdict, await self._existing(verdict, kind, job.tenant)
        return verdict, None

    def _entry(self, pool_name: str, job: Submission, spill: int,
               idempotency_key: str | None, job_id: str | None = None, fsync: bool = False
               ) -> Enqueue:
        """The ``enqueue`` entry of one admission attempt of a checked submission on one
        pool (no Redis call)."""
        keys = self._routing.partition(pool_name, job.idempotency_key)
        policy = self._policies.get(pool_name, keys, job.priority, job.tenant)
        return self._entry_on(keys, policy, keys.reply(self.client_id), job, job.deadline_s,
                              spill, idempotency_key, self._counted_as(job.tenant),
                              job_id or self._job_ids.new(pool_name, keys.partition), fsync)

    def _entry_on(self, keys: PartitionKeys, policy: StreamPolicy, reply: str, job: Submission,
                  deadline_s: float | None, spill: int, idempotency_key: str | None,
                  tenant: str | None, job_id: str, fsync: bool = False, group: str = ""
                  ) -> Enqueue:
        """The entry of a job ``job_id`` onto one stream (``policy``) of one partition.
        ``tenant``: the name the envelope carries (see :meth:`_counted_as`); ``group``: the
        submitter's group, when known (see ``submitter.py``)."""
        created = now_ms()
        envelope = JobEnvelope.built(
            v=1, id=job_id, model=job.model, priority=job.priority, created_ms=created,
            deadline_ms=None if deadline_s is None else created + int(deadline_s * 1000),
            tenant=tenant, attempts=0, request=job.request, trace=job.trace)
        entry = Enqueue(
            policy, reply, keys.job(job_id), idempotency_key, job_id,
            envelope.model_dump_json(),
            int(self.config.jobs.idempotency_ttl_s * 1000) if idempotency_key else 0,
            spill, request_tokens(job.request),
            0 if deadline_s is None else max(1, int(deadline_s * 1000)), job.tenant, fsync,
            group)
        if policy.tenant and policy.tenant.tpm and entry.tokens > policy.tenant.tpm:
            raise InvalidRequest(f"the request needs about {entry.tokens} tokens, more than "
                                 f"tenant {policy.tenant.name!r} may use in a minute here")
        return entry

    def _admitted(self, verdict: Admitted, job_id: str, tenant: str | None,
                  deadline_s: float | None, kind: type[R], waiter: asyncio.Future[str],
                  deltas: Deltas | None) -> AsyncJob[R]:
        if verdict.start_ms is not None:  # the prediction, higher priorities included
            start: float | None = verdict.start_ms / 1000
        elif verdict.position == 0:
            start = 0.0
        else:
            start = None if not verdict.drain_rate else verdict.position / verdict.drain_rate
        return AsyncJob(self, job_id, kind, position=verdict.position,
                        estimated_start_s=start, waiter=waiter, deltas=deltas,
                        deadline_ms=verdict.deadline_ms, tenant=tenant,
                        deadline_s=deadline_s)

    def _counted_as(self, tenant: str | None) -> str | None:
        """The tenant name a job's envelope carries: the one its quotas, keys and metric
        labels use (an unconfigured name is ``default``); the submitter itself is kept in
        the job record (``owner``)."""
        return None if tenant is None else self._policies.counted(tenant)
