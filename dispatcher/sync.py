"""The synchronous enqueue API: a thin wrapper that runs :class:`AsyncClient` on a
background event loop. Every method delegates; there is no second implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from broker.config import SwitchyardConfig
from broker.schemas import EmbedResult, JobOutcome, JobState, Priority
from dispatcher.client import AsyncClient
from dispatcher.jobs import AsyncJob
from dispatcher.portal import Portal

__all__ = ["Client", "Job"]


async def _make(config: SwitchyardConfig | None, redis_url: str | None) -> AsyncClient:
    return AsyncClient(config, redis_url=redis_url)


class Job:
    """The sync face of :class:`AsyncJob`."""

    def __init__(self, portal: Portal, job: AsyncJob) -> None:
        self._portal = portal
        self._job = job

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def position(self) -> int | None:
        return self._job.position

    def status(self) -> JobState:
        return self._portal.call(self._job.status())

    def result(self, timeout: float | None = None) -> EmbedResult:
        return self._portal.call(self._job.result(timeout))

    def outcome(self, timeout: float | None = None) -> JobOutcome:
        return self._portal.call(self._job.outcome(timeout))

    def cancel(self) -> bool:
        return self._portal.call(self._job.cancel())


class Client:
    """Synchronous client; same arguments and behaviour as :class:`AsyncClient`."""

    def __init__(
        self, config: SwitchyardConfig | None = None, *, redis_url: str | None = None
    ) -> None:
        self._portal = Portal()
        try:
            self._client = self._portal.call(_make(config, redis_url))
        except BaseException:
            self._portal.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client_id(self) -> str:
        return self._client.client_id

    def close(self) -> None:
        try:
            self._portal.call(self._client.aclose())
        finally:
            self._portal.close()

    def job(self, job_id: str) -> Job:
        return Job(self._portal, self._client.job(job_id))

    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        priority: Priority = "standard",
        deadline_s: float | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> Job:
        job = self._portal.call(self._client.embed(
            model, input, priority=priority, deadline_s=deadline_s,
            idempotency_key=idempotency_key, tenant=tenant,
        ))
        return Job(self._portal, job)
