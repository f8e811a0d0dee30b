"""`switchyard alerts render [--config FILE] [--out FILE]`: Prometheus recording and
alerting rules written from the Switchyard config, so thresholds follow each pool's
interactive wait target and the ``[monitoring]`` budgets.

Recording rules (``switchyard:...``): the interactive wait SLO's bad share over 5 m,
30 m, 1 h and 6 h per pool; wait p99 per pool and priority, and the pool's target beside
it; goodput (jobs/s succeeded) and the rejection share per pool; depth and drain rate
per pool; provider spend over the last hour.

Alerts: the SLO's burn rate (fast: 14.4x over 5 m and 1 h; slow: 6x over 30 m and 6 h, as
in Google's SRE workbook), a pool with work queued and no live worker, drain stalled
while work is queued, dead letters growing, a breaker open too long, a high rejection
share, Redis near ``maxmemory``, provider spend over the hourly budget, and an exporter
that cannot be scraped. ``docs/architecture.md`` and the README ("Operating
Switchyard") say what each means and what to do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from switchyard.broker.config import MonitoringConfig, SwitchyardConfig, load_config
from switchyard.ops.yamlish import dump
from switchyard.workers.job_times import le

__all__ = ["ALERTS", "SLO_WINDOWS", "add_parser", "rules"]


SLO_WINDOWS = ("5m", "30m", "1h", "6h")
ALERTS = ("SwitchyardWaitSLOFastBurn", "SwitchyardWaitSLOSlowBurn", "SwitchyardNoWorkers",
          "SwitchyardDrainStalled", "SwitchyardDeadLettersGrowing", "SwitchyardBreakerOpen",
          "SwitchyardRejectionsHigh", "SwitchyardRedisMemoryHigh", "SwitchyardSpendOverBudget",
          "SwitchyardExporterDown")
"""Every alert rule :func:`rules` may write (the spend alert only with a budget set)."""

WAIT = "switchyard_queue_wait_seconds"
REFUSED = 'verdict=~"rejected|shed|aged|tenant"'
OFFERED = 'verdict!~"duplicate|reserved"'


def rules(config: SwitchyardConfig) -> dict[str, Any]:
    """The rule file, as a mapping (see :func:`render`)."""
    return {"groups": [{"name": "switchyard-recording", "rules": _recording(config)},
                       {"name": "switchyard-alerts", "rules": _alerts(config)}]}


def render(config: SwitchyardConfig) -> str:
    return ("# Written by `switchyard alerts render`: edit the Switchyard config "
            "([monitoring], wait_targets), not this file.\n" + dump(rules(config)))


def _recording(config: SwitchyardConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, pool in config.pools.items():
        target = config.monitoring.objective(pool.wait_targets.interactive)
        sel = f'pool="{name}",priority="interactive"'
        out.append({"record": "switchyard:wait_target_seconds",
                    "expr": f"vector({le(target)})", "labels": {"pool": name}})
        for w in SLO_WINDOWS:
            good = (f'sum(rate({WAIT}_bucket{{{sel},le="{le(target)}"}}[{w}]))')
            total = f"sum(rate({WAIT}_count{{{sel}}}[{w}]))"
            out.append({"record": f"switchyard:wait_slo_bad:ratio_rate{w}",
                        "expr": f"1 - {good} / {total}", "labels": {"pool": name}})
    out += [
        {"record": "switchyard:queue_wait_seconds:p99", "expr":
         f"histogram_quantile(0.99, sum by (pool, priority, le) (rate({WAIT}_bucket[5m])))"},
        {"record": "switchyard:goodput:rate5m", "expr":
         'sum by (pool) (rate(switchyard_jobs_total{outcome="succeeded"}[5m]))'},
        {"record": "switchyard:rejection:ratio_rate10m", "expr":
         f"sum by (pool) (rate(switchyard_admission_total{{{REFUSED}}}[10m])) / "
         f"sum by (pool) (rate(switchyard_admission_total{{{OFFERED}}}[10m]))"},
        {"record": "switchyard:queue_depth", "expr": "sum by (pool) (switchyard_queue_depth)"},
        {"record": "switchyard:drain_rate", "expr":
         "sum by (pool) (switchyard_queue_drain_rate)"},
        {"record": "switchyard:spend_usd:increase1h", "expr":
         "sum(increase(switchyard_provider_spend_usd_total[1h]))"},
    ]
    return out


def _alert(name: str, expr: str, for_: str, severity: str, summary: str,
           action: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "action": action}}


def _alerts(config: SwitchyardConfig) -> list[dict[str, Any]]:
    return _slo_alerts(config.monitoring) + _pool_alerts() + _platform_alerts(config.monitoring)


def _slo_alerts(m: MonitoringConfig) -> list[dict[str, Any]]:
    """Multi-window burn rates of the interactive wait SLO (Google's SRE workbook)."""
    budget = round(1 - m.wait_slo, 6)
    fast, slow = round(14.4 * budget, 6), round(6 * budget, 6)
    return [
        _alert("SwitchyardWaitSLOFastBurn",
               f"switchyard:wait_slo_bad:ratio_rate5m > {fast} "
               f"and switchyard:wait_slo_bad:ratio_rate1h > {fast}", "2m", "page",
               "Pool {{ $labels.pool }}: interactive jobs wait past their target at 14.4x "
               "the SLO's error budget (2% of a 30-day budget an hour)",
               "Add workers to the pool, or lower its wait target's "
               "cap so callers get an honest 429 instead of a late answer."),
        _alert("SwitchyardWaitSLOSlowBurn",
               f"switchyard:wait_slo_bad:ratio_rate30m > {slow} "
               f"and switchyard:wait_slo_bad:ratio_rate6h > {slow}", "15m", "ticket",
               "Pool {{ $labels.pool }}: interactive wait SLO burning at 6x its budget",
               "Capacity is short at peak: add workers, or route overflow to a provider."),
    ]


def _pool_alerts() -> list[dict[str, Any]]:
    """A pool that cannot drain: no workers, workers that drain nothing, dead letters."""
    return [
        _alert("SwitchyardNoWorkers",
               "switchyard:queue_depth > 0 and on (pool) switchyard_workers_alive == 0",
               "2m", "page", "Pool {{ $labels.pool }} has work queued and no live worker",
               "Start workers for the pool (`switchyard worker --pool ...`); check their "
               "hosts and logs. The watchdog keeps their jobs."),
        _alert("SwitchyardDrainStalled",
               "switchyard:queue_depth > 0 and on (pool) switchyard:drain_rate == 0 "
               "and on (pool) switchyard_workers_alive > 0", "5m", "page",
               "Pool {{ $labels.pool }} has work queued, live workers, and drains nothing",
               "Workers are hung or failing every batch: read their logs, `switchyard "
               "status`, and the dead letters (`switchyard dlq list`)."),
        _alert("SwitchyardDeadLettersGrowing", "delta(switchyard_dead_letters[10m]) > 0",
               "1m", "ticket", "Pool {{ $labels.pool }}: jobs are being dead-lettered",
               "Inspect them with `switchyard dlq list`; fix the cause, then `switchyard "
               "dlq replay`."),
    ]


def _platform_alerts(m: MonitoringConfig) -> list[dict[str, Any]]:
    """Providers, refusals, Redis, spend and the exporter itself."""
    out = [
        _alert("SwitchyardBreakerOpen", "switchyard_breaker_open == 1",
               f"{int(m.breaker_open_s)}s", "ticket",
               "Provider target {{ $labels.provider }}/{{ $labels.model }} has not been "
               "closed for " + f"{int(m.breaker_open_s)}s",
               "Traffic fails over to the next target; check the provider's status page and "
               "the key's quota."),
        _alert("SwitchyardRejectionsHigh",
               f"switchyard:rejection:ratio_rate10m > {m.rejection_share}", "10m", "ticket",
               "Pool {{ $labels.pool }} refuses more than " + f"{m.rejection_share:.0%} of "
               "the jobs offered",
               "Demand exceeds capacity or a tenant's quota: add workers, raise the caps or "
               "quotas, or give the model an overflow pool."),
        _alert("SwitchyardRedisMemoryHigh",
               "switchyard_redis_memory_used_bytes / (switchyard_redis_maxmemory_bytes > 0) "
               f"> {m.redis_memory_share}", "5m", "page",
               "Redis {{ $labels.node }} is near its maxmemory",
               "Admission is refused past maxmemory: raise maxmemory, shorten [jobs] "
               "result_ttl_s, or add cluster masters."),
        _alert("SwitchyardExporterDown", 'up{job="switchyard-exporter"} == 0', "2m", "ticket",
               "Prometheus cannot scrape a Switchyard exporter",
               "Restart `switchyard exporter`; check it reaches Redis."),
    ]
    if m.spend_usd_per_hour > 0:
        out.append(_alert(
            "SwitchyardSpendOverBudget",
            f"switchyard:spend_usd:increase1h > {m.spend_usd_per_hour}", "5m", "ticket",
            "Provider spend over the last hour is past the budget "
            f"({m.spend_usd_per_hour} USD)",
            "Overflow is going to providers: add local capacity, or lower the spill "
            "(deadline_share, wait_limit_s)."))
    return out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("alerts", help="Prometheus rules from the Switchyard config")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    r = verbs.add_parser("render", help="write the recording and alerting rules (YAML)")
    r.add_argument("--config")
    r.add_argument("--out", type=Path, help="a file (default: standard output)")
    r.set_defaults(handler=_render)


def _render(ns: argparse.Namespace) -> int:
    text = render(load_config(ns.config))
    if ns.out is None:
        sys.stdout.write(text)
    else:
        ns.out.write_text(text)
    return 0
