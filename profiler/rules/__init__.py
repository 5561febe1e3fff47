"""The diagnosis rules: one module each, every one a check ``(context) -> list[Verdict]`` judging
measured evidence only (the contract: :mod:`profiler.rules.contract`), listed here in the one
registry that holds their ids.

Rule ids are stable (kebab-case) and documented in the README; thresholds cite the tools
whose rules they follow (Nsight Systems' expert system, TensorBoard/XProf input-pipeline
analysis, Holistic Trace Analysis, SageMaker Debugger).
"""

from __future__ import annotations

from profiler.rules import (batching, cache, cpu_fallback, device_idle, gc_pauses, gil, graph_fusion, host_sync,
                            latency_outliers, model_reload, pageable_h2d, precision, queues, request_path,
                            runtime_switch, serialization, stage_bound, threads)
from profiler.rules.contract import Rule, Verdict

RULES: tuple[Rule, ...] = (
    stage_bound.DECODE_BOUND,
    stage_bound.PREPROCESS_BOUND,
    queues.RULE,
    batching.RULE,
    precision.RULE,
    graph_fusion.RULE,
    runtime_switch.RULE,
    cache.RULE,
    pageable_h2d.RULE,
    host_sync.RULE,
    device_idle.RULE,
    gil.RULE,
    threads.RULE,
    serialization.RULE,
    model_reload.RULE,
    cpu_fallback.RULE,
    latency_outliers.RULE,
    gc_pauses.RULE,
    request_path.DOWNSTREAM_WAIT,
    request_path.BLOCKING_IO,
)
RULE_IDS: tuple[str, ...] = tuple(rule.id for rule in RULES)

__all__ = ["RULES", "RULE_IDS", "Rule", "Verdict"]
