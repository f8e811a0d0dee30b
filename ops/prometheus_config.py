"""Prometheus's own config for a Switchyard deployment: scrape jobs for the gateway, the
exporters and the workers, and the rule file `switchyard alerts render` writes. The
compose stack's ``ops/prometheus/prometheus.yml`` is :func:`scrape_config` of its
services (a test keeps the file in step); tests build theirs for local ports."""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.ops.yamlish import dump

__all__ = ["COMPOSE", "JOBS", "scrape_config"]

JOBS = ("switchyard-gateway", "switchyard-exporter", "switchyard-workers")
"""The scrape jobs, in the order of :func:`scrape_config`'s target lists (the alert on an
exporter that cannot be scraped names ``switchyard-exporter``)."""


def scrape_config(gateways: Sequence[str], exporters: Sequence[str], workers: Sequence[str],
                  rule_files: Sequence[str], interval: str = "15s") -> str:
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}
                           for job, targets in zip(JOBS, (gateways, exporters, workers),
                                                   strict=True) if targets],
    }
    return ("# Written by switchyard.ops.prometheus_config (the compose stack's services).\n"
            + dump(config))


COMPOSE = scrape_config(
    ["gateway:8080"], ["exporter:9200"],
    ["worker-minilm:9100", "worker-tiny-llama:9100", "worker-echo:9100", "worker-cloud:9100"],
    ["/etc/prometheus/rules.yml"])
"""``ops/prometheus/prometheus.yml``."""
