"""Coalesces concurrent enqueue calls of one client into pipelined round trips.

Every ``submit`` made while a round trip is in flight joins the next one, so a burst of
thousands of concurrent submissions costs a handful of round trips, while a lone
submission still goes out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from broker.scripts import ScriptCall, Scripts

__all__ = ["Submitter"]

MAX_PIPELINE = 2_000


class Submitter:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._queue: list[tuple[ScriptCall, asyncio.Future[object]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, call: ScriptCall) -> object:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_PIPELINE]
            del self._queue[:MAX_PIPELINE]
            await self._send(batch)

    async def _send(self, batch: Sequence[tuple[ScriptCall, asyncio.Future[object]]]) -> None:
        try:
            results = await self._scripts.pipeline([call for call, _ in batch])
        except Exception as exc:  # every caller gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def aclose(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
