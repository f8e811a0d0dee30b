"""``[batch]``: background batches (the OpenAI Batch API: ``/v1/files``, ``/v1/batches``)
and the rq workers that run them (``switchyard batch-worker``).

Files live in a folder (``files_dir``; several gateways and batch workers share one path),
within OpenAI's limits and a per-tenant quota; batches are rq jobs on ``queue``, in
``redis_url`` (rq has no Redis Cluster support: give it a single server there).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ByteSize, Field

from switchyard.broker.confbase import Seconds, Strict

__all__ = ["BatchConfig"]


class BatchConfig(Strict):
    redis_url: str = ""
    """rq's Redis ('': the broker's, ``[redis] url``). Secrets only from the environment:
    ``SWITCHYARD_BATCH__REDIS_URL``."""
    queue: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "switchyard-batches"
    window_s: Seconds = 86_400.0
    """What a batch's ``completion_window`` ("24h", the one OpenAI takes) gives it here:
    lines still undone when it closes end ``batch_expired`` (shorten it for tests)."""
    files_dir: str = ""
    """Where files are kept ('': ``files`` under the state directory,
    ``$SWITCHYARD_STATE_DIR``, else ``./.switchyard``)."""
    max_file_bytes: ByteSize = ByteSize(200 * 1000 * 1000)
    """Bytes of one uploaded file (OpenAI's batch limit: 200 MB)."""
    max_lines: Annotated[int, Field(ge=1, le=10_000_000)] = 50_000
    """Lines of one batch input file (OpenAI's: 50,000 requests)."""
    tenant_quota_bytes: ByteSize = ByteSize(10 * 1000 * 1000 * 1000)
    """What one tenant may keep stored, inputs and outputs together."""
    file_retention_s: Seconds = 30 * 86_400.0
    """Files are deleted this long after they were made."""
    in_flight: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    """Lines of one batch admitted and not yet answered, at most."""
    lease_s: Annotated[float, Field(ge=0.5, le=3_600)] = 10.0
    """A running batch's lease: a batch worker renews it a third of this often; once it
    lapses (the worker died), any batch worker takes the batch up where it stood."""
    list_price_in: Annotated[float, Field(ge=0)] = 0.0
    """USD per million input tokens at a provider's list price: each batch reports what
    its tokens would have cost there, beside what they cost here (0, with
    ``list_price_out`` 0: not reported)."""
    list_price_out: Annotated[float, Field(ge=0)] = 0.0
    """USD per million output tokens at that provider."""
