"""The ``[monitoring]`` section: what `switchyard exporter` folds, and the thresholds
`switchyard alerts render` writes into the alert rules (re-exported by
``broker/config.py``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from switchyard.broker.confbase import Seconds, Strict

__all__ = ["MonitoringConfig"]


class MonitoringConfig(Strict):
    max_tenants: Annotated[int, Field(ge=1, le=1000)] = 20
    """Tenant label values the exporter keeps: the configured tenants first, then the
    biggest spenders; the rest fold into ``other`` (bounded label cardinality)."""
    wait_slo: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.99
    """Share of interactive jobs whose queue wait (admission to start) must be within
    their pool's interactive wait target: the SLO the burn-rate alerts guard."""
    wait_objective_s: Seconds = 1.0
    """The interactive wait target of a pool that sets none (``wait_targets``)."""
    breaker_open_s: Seconds = 300.0
    """Alert when a provider target's breaker has not been closed for this long."""
    redis_memory_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    """Alert when Redis uses this share of its ``maxmemory``."""
    spend_usd_per_hour: Annotated[float, Field(ge=0.0)] = 0.0
    """Alert when provider spend over the last hour passes this (0: no such alert)."""
    rejection_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    """Alert when this share of a pool's offered jobs is refused, over 10 minutes."""

    def objective(self, interactive_target: float | None) -> float:
        """The interactive wait target of a pool: its own, else ``wait_objective_s``."""
        return interactive_target or self.wait_objective_s
