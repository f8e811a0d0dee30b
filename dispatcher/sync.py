"""The synchronous enqueue API: a thin wrapper that runs :class:`AsyncClient` on a
background event loop. Every method delegates; there is no second implementation. The
one shortcut: ``embed`` and ``chat`` send a plain admission from the calling thread
(``direct.py``), with the async client's own code, and go to the loop for the rest."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Generic, Self

from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.schemas import (
    ChatMessage,
    ChatResult,
    EmbedResult,
    JobOutcome,
    JobState,
    Priority,
)
from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.direct import Direct
from switchyard.dispatcher.jobs import AnyResult, AsyncJob, R, R_co
from switchyard.dispatcher.portal import Portal
from switchyard.dispatcher.submissions import chat_submission, embed_submission
from switchyard.dispatcher.submitter import Submission

__all__ = ["Client", "Job"]


async def _make(config: SwitchyardConfig | None, redis_url: str | None) -> AsyncClient:
    return AsyncClient(config, redis_url=redis_url)


class Job(Generic[R_co]):
    """The sync face of :class:`AsyncJob`; iterating a streaming chat job yields its text
    deltas."""

    def __init__(self, portal: Portal, job: AsyncJob[R_co]) -> None:
        self._portal = portal
        self._job: AsyncJob[R_co] = job

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def position(self) -> int | None:
        return self._job.position

    @property
    def estimated_start_s(self) -> float | None:
        return self._job.estimated_start_s

    def status(self) -> JobState:
        return self._portal.call(self._job.status())

    def result(self, timeout: float | None = None) -> R_co:
        return self._portal.call(self._job.result(timeout))

    def stream(self, timeout: float | None = None) -> Iterator[str]:
        return self._portal.iterate(self._job.stream(timeout))

    def __iter__(self) -> Iterator[str]:
        return self.stream()

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
            self._direct = Direct(self._client, self._portal.loop)
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
            self._direct.close()
            self._portal.call(self._client.aclose())
        finally:
            self._portal.close()

    def job(self, job_id: str) -> Job[AnyResult]:
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
        max_retries: int | None = None,
        durable: bool = False,
    ) -> Job[EmbedResult]:
        job = embed_submission(self._client.config.limits, model, input, priority, deadline_s,
                               idempotency_key, tenant, durable)
        return self._submit(job, EmbedResult, max_retries)

    def chat(
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
    ) -> Job[ChatResult]:
        job = chat_submission(
            self._client.config.limits, model, messages, max_tokens=max_tokens,
            temperature=temperature, top_p=top_p, stop=stop, seed=seed, stream=stream,
            priority=priority, deadline_s=deadline_s, idempotency_key=idempotency_key,
            tenant=tenant, durable=durable)
        return self._submit(job, ChatResult, max_retries)

    def _submit(self, job: Submission, kind: type[R], max_retries: int | None) -> Job[R]:
        handle = self._direct.submit(job, kind, max_retries)
        if handle is None:
            handle = self._portal.call(self._client.submit(job, kind, max_retries))
        return Job(self._portal, handle)
