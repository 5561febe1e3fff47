"""Summary statistics of a load run (client-side view)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from profiler.measures.requests import RequestFigures, request_figures
from samples.loadgen.runner import RequestRecord


@dataclass(frozen=True)
class LoadSummary:
    requests: int
    ok: int
    errors: dict[str, int]
    duration_s: float
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    duplicate_fraction: float
    bytes_sent: int
    dropped: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def records_figures(records: list[RequestRecord]) -> RequestFigures:
    """The measured requests' figures (warm-up left out; answered = status 200), by the one
    definition prof uses everywhere (:mod:`profiler.measures.requests`)."""
    measured = [r for r in records if not r.warmup]
    return request_figures("loadgen", np.array([r.start_ns for r in measured], dtype=np.int64),
                           np.array([r.latency_ns for r in measured], dtype=np.int64),
                           np.array([r.status == 200 for r in measured], dtype=bool))


def summarize(records: list[RequestRecord], dropped: int = 0) -> LoadSummary:
    measured = [r for r in records if not r.warmup]
    figures = records_figures(records)
    latencies = figures.latency_ms
    errors = Counter(str(r.status) if r.status else (r.error or "error").split(":")[0] for r in measured
                     if r.status != 200)
    return LoadSummary(
        requests=len(measured), ok=figures.count, errors=dict(errors), duration_s=figures.window_s,
        throughput_rps=figures.throughput_rps,
        p50_ms=figures.percentile(50), p95_ms=figures.percentile(95), p99_ms=figures.percentile(99),
        mean_ms=float(latencies.mean()) if len(latencies) else float("nan"),
        duplicate_fraction=sum(r.duplicate for r in measured) / len(measured) if measured else 0.0,
        bytes_sent=sum(r.bytes_sent for r in measured), dropped=dropped,
    )
