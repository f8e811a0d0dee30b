"""Callers are tenants by their API key: ``Authorization: Bearer KEY`` or ``x-api-key:
KEY``. A key is checked by its SHA-256 digest against the configuration
(``[tenants.NAME] api_keys_sha256``), then against the run-time keys in Redis (see
``switchyard.broker.apikeys``), whose answers, found or not, are kept for
``[gateway] key_cache_s`` so a revoked key stops working within that long. The tenant
always comes from the key, never from the request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping

from switchyard.broker.apikeys import ApiKey, ApiKeyStore, key_digest
from switchyard.broker.config import SwitchyardConfig
from switchyard.broker.errors import ConfigError
from switchyard.dispatcher.gateway.errors import Unauthorized

__all__ = ["Authenticator"]

CACHE_MAX = 10_000
"""Run-time keys (or absences) remembered at once; the oldest go first."""


class Authenticator:
    def __init__(self, config: SwitchyardConfig, store: ApiKeyStore) -> None:
        self._open = config.gateway.auth == "none"
        self._configured = {digest: name for name, tenant in config.tenants.items()
                            for digest in tenant.api_keys_sha256}
        self._store = store
        self._ttl = config.gateway.key_cache_s
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._digests: dict[str, str] = {}  # key -> its digest, for keys seen lately

    async def check_startable(self) -> None:
        """Refuse to serve with ``auth = "keys"`` and no key anywhere to accept."""
        if self._open or self._configured or await self._store.any():
            return
        raise ConfigError('the gateway has no API keys: add [tenants.NAME] api_keys_sha256, '
                          'or run `switchyard keys create --tenant NAME`, or set [gateway] '
                          'auth = "none" (no authentication: never on a network)')

    async def tenant(self, headers: Mapping[str, str]) -> tuple[str | None, bool]:
        """The caller's tenant (None: ``auth = "none"``, everyone is ``default``), and
        whether its key is a run-time one (from Redis)."""
        if self._open:
            return None, False
        key = _presented(headers)
        if not key:
            raise Unauthorized()
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) >= CACHE_MAX:
                self._digests.clear()
            digest = self._digests[key] = key_digest(key)
        name = self._configured.get(digest)
        if name is not None:
            return name, False
        record = await self._lookup(digest)
        if record is None or not record.live(int(time.time() * 1000)):
            raise Unauthorized("the API key is not valid (unknown, revoked or expired)")
        return record.tenant, True

    async def _lookup(self, digest: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        record = await self._store.lookup(digest)
        self._cache[digest] = (now, record)
        self._cache.move_to_end(digest)
        while len(self._cache) > CACHE_MAX:
            self._cache.popitem(last=False)
        return record


def _presented(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip()
