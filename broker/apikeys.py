"""The gateway's run-time API keys, kept in Redis by their SHA-256 digest only.

A key is ``sy-`` and 43 URL-safe characters (256 random bits); it is shown once, when it
is made, and never stored: Redis holds its digest and a record (tenant, when made, when it
expires). Its id, what ``switchyard keys list`` shows and ``keys revoke`` takes, is the
digest's first 12 hex digits. Keys named in the configuration
(``[tenants.NAME] api_keys_sha256``) are read from there, not from here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from switchyard.broker.errors import SwitchyardError
from switchyard.broker.keys import TENANT_NAME, Keys

__all__ = ["ApiKey", "ApiKeyStore", "key_digest", "new_key"]

ID_DIGITS = 12


def new_key() -> str:
    return "sy-" + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    digest: str
    tenant: str
    created_ms: int
    expires_ms: int | None

    @property
    def id(self) -> str:
        return self.digest[:ID_DIGITS]

    def live(self, now_ms: int) -> bool:
        return self.expires_ms is None or now_ms < self.expires_ms

    def record(self) -> str:
        return json.dumps({"tenant": self.tenant, "created_ms": self.created_ms,
                           "expires_ms": self.expires_ms})

    @classmethod
    def parse(cls, digest: str, raw: str) -> ApiKey | None:
        """The record, or None when it is not one (a damaged entry grants nothing)."""
        try:
            data = json.loads(raw)
            tenant, created, expires = data["tenant"], data["created_ms"], data["expires_ms"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(tenant, str) or not isinstance(created, int) or not (
                expires is None or isinstance(expires, int)):
            return None
        return cls(digest, tenant, created, expires)


class ApiKeyStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.api_keys

    async def create(self, tenant: str, expires_s: float | None = None) -> tuple[str, ApiKey]:
        """A new key for ``tenant``: (the key, shown once; its record)."""
        if not TENANT_NAME.match(tenant):
            raise SwitchyardError(f"tenant name {tenant!r} must match {TENANT_NAME.pattern}")
        if expires_s is not None and expires_s <= 0:
            raise SwitchyardError("a key's lifetime must be positive")
        key = new_key()
        now = int(time.time() * 1000)
        record = ApiKey(key_digest(key), tenant, now,
                        None if expires_s is None else now + int(expires_s * 1000))
        await self._redis.hset(self._key, record.digest, record.record())
        return key, record

    async def any(self) -> bool:
        return bool(await self._redis.hlen(self._key))

    async def lookup(self, digest: str) -> ApiKey | None:
        raw = await self._redis.hget(self._key, digest)
        return None if raw is None else ApiKey.parse(digest, _text(raw))

    async def all(self) -> list[ApiKey]:
        """Every stored key's record, oldest first (HSCAN: the hash is never read whole)."""
        found: list[ApiKey] = []
        async for digest, raw in self._redis.hscan_iter(self._key, count=500):
            record = ApiKey.parse(_text(digest), _text(raw))
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda k: k.created_ms)

    async def revoke(self, key_id: str) -> list[ApiKey]:
        """Delete the keys whose id (or digest) starts with ``key_id`` (at least 8 hex
        digits, so a typo cannot revoke many); the ones deleted."""
        if len(key_id) < 8 or any(c not in "0123456789abcdef" for c in key_id):
            raise SwitchyardError("a key id is at least 8 lowercase hex digits (see `keys "
                                  "list`)")
        gone = [k for k in await self.all() if k.digest.startswith(key_id)]
        if gone:
            await self._redis.hdel(self._key, *[k.digest for k in gone])
        return gone


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
