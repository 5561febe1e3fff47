"""Prometheus metrics of the sample server (real ``prometheus_client``).

With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by the launcher and
``/metrics`` aggregates every worker's files; with one worker the registry is local.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("classify_requests", "Classification requests by HTTP status.", ["status"], registry=r)
        self.rejected = Counter("classify_rejected", "Requests refused as bad input, by reason.", ["reason"], registry=r)
        self.latency = Histogram("classify_latency_seconds", "Server-side request latency.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("classify_stage_seconds", "Time per request-path stage.", ["stage"],
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("classify_batch_size", "Images per inference call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.cache = Counter("classify_cache", "Result cache lookups by outcome (hit, miss, error).",
                             ["outcome"], registry=r)
        self.in_flight = Gauge("classify_in_flight", "Requests being handled now.", registry=r,
                               multiprocess_mode="livesum")

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
