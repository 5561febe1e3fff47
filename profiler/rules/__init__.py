"""The diagnosis rules: one module each, every one a function ``(timeline, context) ->
list[Finding]`` judging measured evidence only, listed here in one explicit registry.

Rule ids are stable (kebab-case) and documented in the README; thresholds cite the tools
whose rules they follow (Nsight Systems' expert system, TensorBoard/XProf input-pipeline
analysis, Holistic Trace Analysis, SageMaker Debugger).
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import Finding
from profiler.rules import (batching, cache, cpu_fallback, device_idle, gil, graph_fusion, host_sync, latency_outliers,
                            model_reload, pageable_h2d, precision, runtime_switch, serialization, stage_bound,
                            threads)


class RuleCheck(Protocol):
    """What every rule is: measured evidence in, findings out."""

    def __call__(self, timeline: pd.DataFrame, context: AnalysisContext) -> list[Finding]: ...


RULES: dict[str, RuleCheck] = {
    "decode-bound": stage_bound.decode_bound,
    "preprocess-bound": stage_bound.preprocess_bound,
    "batching-opportunity": batching.check,
    "reduced-precision": precision.check,
    "graph-fusion": graph_fusion.check,
    "runtime-switch": runtime_switch.check,
    "cache-opportunity": cache.check,
    "pageable-h2d": pageable_h2d.check,
    "host-sync": host_sync.check,
    "device-idle": device_idle.check,
    "gil-contention": gil.check,
    "thread-oversubscription": threads.check,
    "serialization-overhead": serialization.check,
    "model-reload": model_reload.check,
    "cpu-fallback": cpu_fallback.check,
    "latency-outliers": latency_outliers.check,
}
