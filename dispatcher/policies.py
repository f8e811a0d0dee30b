"""How the client admits onto each priority stream: one :class:`StreamPolicy` per
partition, priority and tenant, built from the configuration once and reused."""

from __future__ import annotations

import math

from switchyard.broker.calls import StreamPolicy, TenantQuota
from switchyard.broker.config import DEFAULT_TENANT, PoolConfig, SwitchyardConfig, TenantConfig
from switchyard.broker.keys import PartitionKeys
from switchyard.broker.schemas import PRIORITIES, Priority

__all__ = ["Policies"]

MAX_CACHED = 10_000


class Policies:
    def __init__(self, config: SwitchyardConfig) -> None:
        self._config = config
        self._cache: dict[tuple[str, Priority, str | None], StreamPolicy] = {}
        self.own: set[str] = set()
        """Unconfigured tenants with a bucket of their own (see ``AsyncClient.own_bucket``)."""

    def counted(self, tenant: str | None) -> str | None:
        """The name a tenant is counted under: see ``SwitchyardConfig.tracked_tenant``;
        a tenant given a bucket of its own is counted under its own name."""
        if tenant is not None and tenant in self.own:
            return tenant
        return self._config.tracked_tenant(tenant)

    def get(self, pool_name: str, keys: PartitionKeys, priority: Priority,
            tenant: str | None) -> StreamPolicy:
        tenant = self.counted(tenant)  # unconfigured names share one policy
        cache_key = (keys.base, priority, tenant)
        policy = self._cache.get(cache_key)
        if policy is None:
            if len(self._cache) >= MAX_CACHED:  # many one-off tenants: start again
                self._cache.clear()
            policy = self._cache[cache_key] = self._build(
                self._config.pools[pool_name], keys, priority, tenant)
        return policy

    def _build(self, pool: PoolConfig, keys: PartitionKeys, priority: Priority,
               tenant: str | None) -> StreamPolicy:
        cap, job_ttl_ms = getattr(pool.caps, priority), int(self._config.jobs.job_ttl_s * 1000)
        if not pool.admission_control:
            return StreamPolicy(keys.stream(priority), keys.drain(priority), cap, job_ttl_ms)
        shed_ms, wait_ms = pool.shed_after_s.ms(priority), pool.wait_targets.ms(priority)
        return StreamPolicy(
            stream=keys.stream(priority), drain=keys.drain(priority), cap=cap,
            job_ttl_ms=job_ttl_ms, wait_target_ms=wait_ms, cap_floor=pool.cap_floor,
            shed_ms=shed_ms,
            pool_keys=(*keys.queues(), *(keys.drain(p) for p in PRIORITIES)),
            age_gate_ms=int(pool.age_gate_s * 1000),
            tenant=self._quota(pool, keys, priority, tenant))

    def _quota(self, pool: PoolConfig, keys: PartitionKeys, priority: Priority,
               tenant: str | None) -> TenantQuota | None:
        """The tenant's quota on one partition: 1/N of its configured one (N partitions).
        None when no tenants are configured: then none are tracked."""
        tenants = self._config.tenants
        if not tenants:
            return None
        name = self.counted(tenant) or DEFAULT_TENANT  # refused earlier
        quota = tenants.get(name) or tenants.get(DEFAULT_TENANT) or TenantConfig()
        n = pool.partitions
        return TenantQuota(
            name=name,
            keys=(keys.tenant_jobs(name, priority),
                  *(keys.tenant_jobs(name, p) for p in PRIORITIES if p != priority),
                  keys.tenant_quota(name), keys.tenants_seen, keys.tenant_weights),
            weight=quota.weight, rps=quota.rps / n,
            bucket=max(1.0, quota.rps * quota.burst_s / n), tpm=quota.tpm / n,
            max_concurrent=math.ceil(quota.max_concurrent / n), share_at=pool.fair_share_at)
