"""``graph-fusion``: the graph runs unfused — BatchNormalization and activation nodes beside
their convolutions in an ORT trace (ORT fuses them at its ``extended``/``all`` levels) — or
eager PyTorch
issues storms of tiny ops (Holistic Trace Analysis flags launch-bound work the same way:
many short ops, little work each)."""

from __future__ import annotations

import pandas as pd

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Finding, Fix
from profiler.rules.common import finding, inference_runtime, ort_op_types, percent

MIN_INFERENCE_SHARE = 0.25
SMALL_OP_NS = 20_000  # ops shorter than 20 µs are dominated by dispatch overhead
FUSE_SNIPPET = """options = onnxruntime.SessionOptions()
options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
session = onnxruntime.InferenceSession("model.onnx", options)"""


def check(timeline: pd.DataFrame, ctx: AnalysisContext) -> list[Finding]:
    share = ctx.service_share("inference")
    if share < MIN_INFERENCE_SHARE:
        return []
    if inference_runtime(ctx) == "ort":
        return _ort(ctx, share)
    return _eager_storm(ctx, share)


def _ort(ctx: AnalysisContext, share: float) -> list[Finding]:
    """Judged on the graph an ORT trace shows. Without one there is no telling: timing alone
    cannot separate a fused from an unfused graph here (fusion is worth ~1.2x on this CPU,
    and co-running decode threads already stretch inference by ~30%)."""
    ops = ort_op_types(ctx)
    if ops.empty:
        return []
    counts = ops.value_counts()
    unfused = int(counts.get("BatchNormalization", 0)) + int(counts.get("Relu", 0))
    if unfused == 0 or counts.get("FusedConv", 0):
        return []
    calibration = ctx.calibration
    speedup = float(getattr(calibration, "ort_opt_speedup", 0.0) or 0.0)
    if speedup > 1.0:
        assumption = f"ORT with all graph optimizations {speedup:.2f}x faster (calibrated on this host)"
    else:
        speedup, assumption = 1.15, "fusion assumed to save 13% of inference (no calibration)"
    removed = share * (1.0 - 1.0 / speedup)
    gain = ctx.amdahl(removed, [assumption], "calibrated" if calibration else "amdahl")
    fix = Fix("enable ONNX Runtime's graph optimizations (Conv+BatchNorm+ReLU fusion, constant folding)",
              FUSE_SNIPPET, {"--ort-opt-level": "all"})
    evidence = {"inference_share": round(share, 3), "batchnorm_nodes": int(counts.get("BatchNormalization", 0)),
                "relu_nodes": int(counts.get("Relu", 0)), "conv_nodes": int(counts.get("Conv", 0))}
    return [finding(ctx, "graph-fusion", "the ONNX graph runs unfused (BatchNorm/ReLU beside convolutions)", removed,
                    evidence, fix, gain, [EventRef("ort", names=["BatchNormalization", "Relu"], stages=["inference"])])]


def _eager_storm(ctx: AnalysisContext, share: float) -> list[Finding]:
    ops = ctx.kineto_category("cpu_op")
    if len(ops) < 200:
        return []
    small = ops[ops["dur_ns"] < SMALL_OP_NS]
    fraction = len(small) / len(ops)
    if fraction < 0.5:
        return []
    removed = share * 0.3
    gain = ctx.amdahl(removed, ["compiling/fusing removes about 30% of eager dispatch time (assumed)"])
    fix = Fix("compile or export the model so small ops fuse (torch.compile, TorchScript freeze, or ONNX Runtime)",
              "model = torch.compile(model, mode='reduce-overhead')", {"--backend": "ort"})
    return [finding(ctx, "graph-fusion", f"{percent(fraction)} of {len(ops):,} eager ops are shorter than 20 µs",
                    removed, {"ops": len(ops), "small_op_fraction": round(fraction, 3)}, fix, gain,
                    [EventRef("torch", stages=["inference"])])]
