"""The Grafana dashboards, built here and written as JSON to ``ops/grafana/dashboards/``
(`switchyard dashboards write`; a test checks the files match what this builds).

Five dashboards on one Prometheus datasource (uid ``switchyard-prometheus``, provisioned
by ``ops/grafana/provisioning/``): overview; pools and queues; GPUs and batches;
providers and failover; tenants and cost. Each has a ``pool`` variable (multi-select,
all by default) where its panels are per pool.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARDS", "DATASOURCE_UID", "add_parser", "build", "write_all"]

DATASOURCE_UID = "switchyard-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
HERE = Path(__file__).resolve().parent / "grafana" / "dashboards"
P = 'pool=~"$pool"'


def _panel(title: str, exprs: list[tuple[str, str]], unit: str = "short",
           kind: str = "timeseries") -> dict[str, Any]:
    """A panel of ``kind`` with one target per (expr, legend)."""
    return {"type": kind, "title": title, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE,
                         "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(exprs)]}


def _overview() -> list[dict[str, Any]]:
    return [
        _panel("Interactive wait p99 against its target", [
            (f'switchyard:queue_wait_seconds:p99{{{P},priority="interactive"}}', "{{pool}} p99"),
            (f"switchyard:wait_target_seconds{{{P}}}", "{{pool}} target")], "s"),
        _panel("Wait SLO: bad share (5 m, 1 h)", [
            (f"switchyard:wait_slo_bad:ratio_rate5m{{{P}}}", "{{pool}} 5m"),
            (f"switchyard:wait_slo_bad:ratio_rate1h{{{P}}}", "{{pool}} 1h")], "percentunit"),
        _panel("Goodput (jobs/s succeeded)", [
            (f"switchyard:goodput:rate5m{{{P}}}", "{{pool}}")], "reqps"),
        _panel("Rejection share (10 m)", [
            (f"switchyard:rejection:ratio_rate10m{{{P}}}", "{{pool}}")], "percentunit"),
        _panel("Queued and draining", [
            (f"switchyard:queue_depth{{{P}}}", "{{pool}} depth"),
            (f"switchyard:drain_rate{{{P}}}", "{{pool}} drain/s")]),
        _panel("Live workers", [(f"switchyard_workers_alive{{{P}}}", "{{pool}}")], kind="stat"),
        _panel("Workers: live and recommended (Erlang C, last minute's load)", [
            (f"switchyard_workers_alive{{{P}}}", "{{pool}} live"),
            (f"switchyard_recommended_workers{{{P}}}", "{{pool}} recommended")]),
        _panel("Gateway requests by status", [
            ("sum by (status) (rate(switchyard_gateway_requests_total[$__rate_interval]))",
             "{{status}}")], "reqps"),
    ]


def _queues() -> list[dict[str, Any]]:
    by = "{{pool}}/{{partition}} {{priority}}"
    return [
        _panel("Depth", [(f"switchyard_queue_depth{{{P}}}", by)]),
        _panel("In flight (pending)", [(f"switchyard_queue_pending{{{P}}}", by)]),
        _panel("Oldest job's age", [(f"switchyard_queue_oldest_age_seconds{{{P}}}", by)], "s"),
        _panel("Retry lane", [(f"switchyard_queue_retrying{{{P}}}", by)]),
        _panel("Cap in force", [(f"switchyard_queue_cap{{{P}}}", by)]),
        _panel("Drain rate (measured)", [(f"switchyard_queue_drain_rate{{{P}}}", by),
                                         (f"rate(switchyard_drained_total{{{P}}}"
                                          "[$__rate_interval])", by + " (counted)")], "reqps"),
        _panel("Admission verdicts", [
            (f"sum by (pool, verdict, reason) (rate(switchyard_admission_total{{{P}}}"
             "[$__rate_interval]))", "{{pool}} {{verdict}} {{reason}}")], "reqps"),
        _panel("Arrivals (last full minute)", [
            (f"sum by (pool) (switchyard_arrivals_last_minute{{{P}}})", "{{pool}} jobs"),
            (f"sum by (pool) (switchyard_arrival_tokens_last_minute{{{P}}})",
             "{{pool}} tokens")]),
        _panel("Queue wait p99 by priority", [
            (f"switchyard:queue_wait_seconds:p99{{{P}}}", "{{pool}} {{priority}}")], "s"),
        _panel("End-to-end p99 by priority", [
            ("histogram_quantile(0.99, sum by (pool, priority, le) "
             f"(rate(switchyard_job_seconds_bucket{{{P}}}[$__rate_interval])))",
             "{{pool}} {{priority}}")], "s"),
        _panel("Dead letters", [(f"switchyard_dead_letters{{{P}}}", "{{pool}}")]),
    ]


def _gpus() -> list[dict[str, Any]]:
    by = "{{pool}} {{worker}} ({{device}})"
    return [
        _panel("Memory used / budget / total", [
            (f"switchyard_memory_used_bytes{{{P}}}", by + " used"),
            (f"switchyard_memory_budget_bytes{{{P}}}", by + " budget"),
            (f"switchyard_memory_total_bytes{{{P}}}", by + " total")], "bytes"),
        _panel("GPU busy", [(f"switchyard_gpu_utilisation{{{P}}} >= 0", by)], "percentunit"),
        _panel("Batch size (mean)", [
            (f"rate(switchyard_batch_size_sum{{{P}}}[$__rate_interval]) / "
             f"rate(switchyard_batch_size_count{{{P}}}[$__rate_interval])", by)]),
        _panel("Batches a second", [
            (f"rate(switchyard_batch_size_count{{{P}}}[$__rate_interval])", by)], "ops"),
        _panel("Tokens generated a second", [
            (f"rate(switchyard_generated_tokens_total{{{P}}}[$__rate_interval])", by)]),
        _panel("Time to first token p99", [
            ("histogram_quantile(0.99, sum by (pool, le) (rate("
             f"switchyard_time_to_first_token_seconds_bucket{{{P}}}[$__rate_interval])))",
             "{{pool}}")], "s"),
        _panel("Jobs by outcome", [
            (f"sum by (pool, outcome) (rate(switchyard_jobs_total{{{P}}}[$__rate_interval]))",
             "{{pool}} {{outcome}}")], "reqps"),
        _panel("OOM recoveries and refusals", [
            (f"increase(switchyard_oom_recoveries_total{{{P}}}[$__rate_interval])", by + " oom"),
            (f"increase(switchyard_too_large_total{{{P}}}[$__rate_interval])",
             by + " too large")]),
    ]


def _providers() -> list[dict[str, Any]]:
    return [
        _panel("Breakers not closed", [("switchyard_breaker_open", "{{provider}}/{{model}}")],
               kind="stat"),
        _panel("Breaker trips", [("increase(switchyard_breaker_trips_total[$__rate_interval])",
                                  "{{provider}}/{{model}}")]),
        _panel("Announced pauses", [("switchyard_provider_pause_seconds", "{{provider}}")], "s"),
        _panel("Spend a minute by provider", [
            ("rate(switchyard_provider_spend_usd_total[$__rate_interval]) * 60",
             "{{provider}}")], "currencyUSD"),
        _panel("Spills to overflow", [
            ('sum by (pool) (rate(switchyard_admission_total{verdict="spill"}'
             "[$__rate_interval]))", "{{pool}}")], "reqps"),
    ]


def _tenants() -> list[dict[str, Any]]:
    return [
        _panel("Spend by tenant (total)", [("switchyard_tenant_spend_usd_total", "{{tenant}}")],
               "currencyUSD", kind="bargauge"),
        _panel("Spend an hour by tenant", [
            ("increase(switchyard_tenant_spend_usd_total[1h])", "{{tenant}}")], "currencyUSD"),
        _panel("Spend in the last hour (all providers)", [
            ("switchyard:spend_usd:increase1h", "USD")], "currencyUSD", kind="stat"),
        _panel("Requests by tenant and status", [
            ("sum by (tenant, status) (rate(switchyard_gateway_requests_total"
             "[$__rate_interval]))", "{{tenant}} {{status}}")], "reqps"),
        _panel("Tenant quota refusals", [
            ('sum by (pool, reason) (rate(switchyard_admission_total{verdict="tenant"}'
             "[$__rate_interval]))", "{{pool}} {{reason}}")], "reqps"),
    ]


DASHBOARDS = {
    "overview": ("Switchyard: overview", _overview),
    "pools-and-queues": ("Switchyard: pools and queues", _queues),
    "gpus-and-batches": ("Switchyard: GPUs and batches", _gpus),
    "providers-and-failover": ("Switchyard: providers and failover", _providers),
    "tenants-and-cost": ("Switchyard: tenants and cost", _tenants),
}


def build(name: str) -> dict[str, Any]:
    """One dashboard's JSON model (panels two to a row, 12 units high)."""
    title, panels = DASHBOARDS[name]
    laid = []
    for i, panel in enumerate(panels()):
        laid.append({"id": i + 1, "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2),
                                              "y": 8 * (i // 2)}, **panel})
    return {
        "uid": f"switchyard-{name}", "title": title, "tags": ["switchyard"],
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"}, "timezone": "browser",
        "templating": {"list": [{
            "name": "pool", "label": "pool", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(switchyard_queue_depth, pool)",
                      "refId": "pool"},
            "definition": "label_values(switchyard_queue_depth, pool)",
            "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"}}]},
        "panels": laid,
    }


def write_all(folder: Path = HERE) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DASHBOARDS:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(build(name), indent=2) + "\n")
        written.append(path)
    return written


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboards", help="the Grafana dashboards (JSON)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    w = verbs.add_parser("write", help="write them to a folder")
    w.add_argument("--out", type=Path, default=HERE)
    w.set_defaults(handler=lambda ns: print("\n".join(map(str, write_all(ns.out)))) or 0)
