"""Summary statistics of a load run (client-side view)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

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


def summarize(records: list[RequestRecord], dropped: int = 0) -> LoadSummary:
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.status == 200]
    latencies = np.array([r.latency_ns for r in ok], dtype=np.float64) / 1e6
    if measured:
        first = min(r.start_ns for r in measured)
        last = max(r.start_ns + r.latency_ns for r in measured)
        duration = max((last - first) / 1e9, 1e-9)
    else:
        duration = 0.0
    pct = (lambda q: float(np.percentile(latencies, q))) if len(latencies) else (lambda q: float("nan"))
    errors = Counter(str(r.status) if r.status else (r.error or "error").split(":")[0] for r in measured
                     if r.status != 200)
    return LoadSummary(
        requests=len(measured), ok=len(ok), errors=dict(errors), duration_s=duration,
        throughput_rps=len(ok) / duration if duration else 0.0,
        p50_ms=pct(50), p95_ms=pct(95), p99_ms=pct(99),
        mean_ms=float(latencies.mean()) if len(latencies) else float("nan"),
        duplicate_fraction=sum(r.duplicate for r in measured) / len(measured) if measured else 0.0,
        bytes_sent=sum(r.bytes_sent for r in measured), dropped=dropped,
    )
