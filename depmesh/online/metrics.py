"""The server's Prometheus metrics (prometheus-client): requests by model, arm and status; latency per model and
arm; rows; swaps and refused sets; refused requests by reason; what serves. With several workers the values are
shared through prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set before the workers
start), so ``/metrics`` from any worker counts all of them."""

from __future__ import annotations

import os
from typing import Any

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = None if self.multiprocess else CollectorRegistry()
        where: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter("depmesh_serve_requests", "Predict requests answered, by model, arm and HTTP status",
                                ["model", "arm", "status"], **where)
        self.latency = Histogram("depmesh_serve_request_seconds", "Predict request latency in seconds (server side)",
                                 ["model", "arm"], buckets=LATENCY_BUCKETS, **where)
        self.rows = Counter("depmesh_serve_rows", "Rows scored, by model and arm", ["model", "arm"], **where)
        self.refusals = Counter("depmesh_serve_refusals", "Requests refused before any model ran, by reason",
                                ["reason"], **where)
        self.swaps = Counter("depmesh_serve_swaps", "Served sets swapped in (Production or rollout changed)", **where)
        self.swap_refusals = Counter("depmesh_serve_swap_refusals",
                                     "New sets refused (an artifact that does not verify, versions that do not "
                                     "belong together): the old set kept serving", **where)
        gauge = {"multiprocess_mode": "livemostrecent"} if self.multiprocess else {}
        self.release = Gauge("depmesh_serve_release", "The Production release being served (0: none)", **gauge,
                             **where)
        self.revision = Gauge("depmesh_serve_registry_revision", "The registry revision of the served set", **gauge,
                              **where)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
