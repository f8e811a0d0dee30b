"""The gateway's own metrics, on a registry of each app (no process-wide state): requests
by route, status and tenant, latency and time to first token, requests in flight, the
queue wait callers saw, and the tokens generated for callers who had gone."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("switchyard_gateway_requests_total",
                                "HTTP requests answered, by route, status and tenant",
                                ["route", "status", "tenant"], registry=self.registry)
        self.latency = Histogram("switchyard_gateway_request_seconds",
                                 "Time to the whole answer (a stream: to its end)", ["route"],
                                 buckets=_SECONDS, registry=self.registry)
        self.ttft = Histogram("switchyard_gateway_ttft_seconds",
                              "Time from a streamed request to its first text", ["route"],
                              buckets=_SECONDS, registry=self.registry)
        self.in_flight = Gauge("switchyard_gateway_in_flight",
                               "Requests being answered now", registry=self.registry)
        self.queue_wait = Histogram("switchyard_gateway_queue_wait_seconds",
                                    "From admission to the first text (or the result), "
                                    "as callers saw it",
                                    ["route"], buckets=_SECONDS, registry=self.registry)
        self.abandoned = Counter("switchyard_gateway_abandoned_total",
                                 "Jobs cancelled because their caller went away",
                                 ["route"], registry=self.registry)
        self.wasted_tokens = Counter("switchyard_gateway_wasted_tokens_total",
                                     "Tokens streamed toward callers who had gone", ["route"],
                                     registry=self.registry)
