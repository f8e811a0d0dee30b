"""Redis must never evict a job record: roles check the server's ``maxmemory-policy``."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from switchyard.broker.errors import UnsafeEvictionPolicy

__all__ = ["check_eviction_policy"]

_log = logging.getLogger(__name__)


async def check_eviction_policy(redis: aioredis.Redis, where: str) -> None:
    """Raise ``UnsafeEvictionPolicy`` unless the server runs ``noeviction`` (any other
    policy may drop admitted jobs under memory pressure). A server that will not say
    (``INFO`` refused by an ACL) is warned about loudly, not refused."""
    try:
        info = await redis.info("memory")
    except ResponseError as exc:
        _log.warning("cannot read Redis's maxmemory-policy at %s (%s): it must be "
                     "noeviction, or admitted jobs may be evicted", where, exc)
        return
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        raise UnsafeEvictionPolicy(
            f"Redis at {where} runs maxmemory-policy {policy}, which may evict job "
            f"records: set it to noeviction (CONFIG SET maxmemory-policy noeviction)")
