"""``graph-fusion``: the graph runs unfused — BatchNormalization and activation nodes beside
their convolutions in an ORT trace (ORT fuses them at its ``extended``/``all`` levels) — or
eager PyTorch
issues storms of tiny ops (Holistic Trace Analysis flags launch-bound work the same way:
many short ops, little work each)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import calibrated_on, inference_runtime, ort_op_types, percent
from profiler.rules.contract import Rule, Verdict

MIN_INFERENCE_SHARE = 0.25
MIN_TIMED_SPEEDUP = 1.5  # without a trace: optimizations must be worth this much to be told by time
UNFUSED_RATIO = 0.6  # ... and inference must take this fraction of the unoptimized time or more (set a priori)
SMALL_OP_NS = 20_000  # ops shorter than 20 µs are dominated by dispatch overhead
MIN_OPS = 200
MIN_SMALL_OP_TIME = 0.30  # small ops hold at least 30 % of the top-level op time
STORM_SAVING = 0.7
FUSE_SNIPPET = """options = onnxruntime.SessionOptions()
options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
session = onnxruntime.InferenceSession("model.onnx", options)"""


def check(ctx: AnalysisContext) -> list[Verdict]:
    share = ctx.service_share("inference")
    if ctx.stage_basis == "none":  # an imported profiler trace alone: it is all model work
        share = _busy_share(ctx.kineto_category("cpu_op"))
    if share < MIN_INFERENCE_SHARE:
        return []
    if inference_runtime(ctx) == "ort":
        return _ort(ctx, share)
    return _eager_storm(ctx, share)


def _ort(ctx: AnalysisContext, share: float) -> list[Verdict]:
    """Judged on the graph an ORT trace shows; without one, on time against the server's own
    model timed with all optimizations (:func:`_by_time`)."""
    ops = ort_op_types(ctx)
    if ops.empty:
        return _by_time(ctx, share)
    counts = ops.value_counts()
    unfused = int(counts.get("BatchNormalization", 0)) + int(counts.get("Relu", 0))
    if unfused == 0 or counts.get("FusedConv", 0):
        return []
    calibration = ctx.calibration
    speedup = float(getattr(calibration, "ort_opt_speedup", 0.0) or 0.0)
    if speedup > 1.0:
        assumption = f"ORT with all graph optimizations {speedup:.2f}x faster ({calibrated_on(ctx, calibration)})"
    else:
        speedup, assumption = 1.15, "fusion assumed to save 13% of inference (no calibration)"
    removed = share * (1.0 - 1.0 / speedup)
    fix = Fix("enable ONNX Runtime's graph optimizations (Conv+BatchNorm+ReLU fusion, constant folding)",
              FUSE_SNIPPET, {"--ort-opt-level": "all"})
    evidence = {"inference_share": round(share, 3), "batchnorm_nodes": int(counts.get("BatchNormalization", 0)),
                "relu_nodes": int(counts.get("Relu", 0)), "conv_nodes": int(counts.get("Conv", 0))}
    return [Verdict("the ONNX graph runs unfused (BatchNorm/ReLU beside convolutions)", removed, evidence, fix,
                    [EventRef("ort", names=["BatchNormalization", "Relu"], stages=["inference"])],
                    "calibrated" if calibration else "amdahl", [assumption])]


def _by_time(ctx: AnalysisContext, share: float) -> list[Verdict]:
    """No ORT trace: the server's own model (found by prof attach, or --model) timed here with all
    graph optimizations and with none. Inference taking about the unoptimized time — at least
    :data:`UNFUSED_RATIO` of the way to it, and 1.3x the optimized time — says the optimizations
    are off. Only where they are worth ≥ 1.5x: a smaller gap is within what co-running work
    stretches inference by (~30 % measured here), so timing cannot tell. Never on the sample
    model's timing: another model's factors say nothing of this graph."""
    from profiler.analysis.calibration_model import SAMPLE_MODEL
    from profiler.rules.common import per_request_ms

    calibration = ctx.calibration
    measured = per_request_ms(ctx, "inference")
    if calibration is None or calibration.model == SAMPLE_MODEL or not measured or not calibration.covers(1):
        return []
    speedup = float(calibration.ort_opt_speedup or 0.0)
    optimized = calibration.per_image_ms(1)
    wall = measured
    measured = wall * ctx.cpu_per_wall  # threads sharing cores take longer: compare CPU with CPU
    ratio = measured / optimized if optimized else 0.0
    if speedup < MIN_TIMED_SPEEDUP or ratio < max(1.3, UNFUSED_RATIO * speedup):
        return []
    removed = share * (1.0 - 1.0 / min(speedup, ratio))
    fix = Fix("enable ONNX Runtime's graph optimizations (operator fusion, QDQ folding, constant folding)",
              FUSE_SNIPPET, {"--ort-opt-level": "all"})
    evidence = {"inference_share": round(share, 3), "inference_ms_per_request": round(wall, 2),
                "inference_cpu_ms_per_request": round(measured, 2), "cpu_per_wall": round(ctx.cpu_per_wall, 3),
                "calibrated_optimized_ms": round(optimized, 2), "calibrated_unoptimized_ms": round(optimized * speedup, 2)}
    return [Verdict(f"inference takes {measured:.1f} ms of CPU a request: this model's unoptimized time "
                    f"({optimized * speedup:.1f} ms here), not its optimized one ({optimized:.1f} ms)", removed, evidence,
                    fix, [EventRef("pyspy", stages=["inference"])], "calibrated",
                    [f"ORT with all graph optimizations {speedup:.2f}x faster ({calibrated_on(ctx, calibration)})",
                     "no ORT trace: told by time, not by the graph's nodes; py-spy's wall time per request scaled "
                     f"by the CPU a busy thread got ({ctx.cpu_per_wall:.2f} of a core)"])]


def _eager_storm(ctx: AnalysisContext, share: float) -> list[Verdict]:
    """Judged on time, not counts: eager ResNet-18 issues 64 % of its ops under 20 µs (allocations,
    views), yet they hold 0.5 % of its op time — the convolutions dominate and no fusion helps
    much. A storm is when top-level ops (those not inside another) shorter than 20 µs hold a real
    part (≥ 30 %) of the time top-level ops take."""
    ops = ctx.kineto_category("cpu_op")
    if len(ops) < MIN_OPS:
        return []
    outer = ops[_top_level(ops)]
    small = outer[outer["dur_ns"] < SMALL_OP_NS]
    top_ns = float(outer["dur_ns"].sum())
    small_share = float(small["dur_ns"].sum()) / top_ns if top_ns else 0.0
    if small_share < MIN_SMALL_OP_TIME:
        return []
    removed = share * small_share * STORM_SAVING
    fix = Fix("compile or export the model so small ops fuse (torch.compile, TorchScript freeze, or ONNX Runtime)",
              "model = torch.compile(model, mode='reduce-overhead')", {"--backend": "ort"})
    return [Verdict(f"{percent(small_share)} of eager op time is in {len(small):,} ops shorter than 20 µs", removed,
                    {"ops": len(ops), "top_level_ops": len(outer), "small_ops": len(small),
                     "small_op_time_share": round(small_share, 3)}, fix, [EventRef("torch", stages=["inference"])],
                    assumptions=[f"compiling/fusing removes about {STORM_SAVING:.0%} of the time in ops shorter than "
                                 "20 µs (assumed: their cost is mostly per-op dispatch)"])]


def _top_level(ops: pd.DataFrame) -> np.ndarray:
    """Mask of the ops not nested in another op of the same thread (a nested op's time is
    already its parent's)."""
    outer = np.zeros(len(ops), dtype=bool)
    starts_all, ends_all = ops["ts_ns"].to_numpy(), (ops["ts_ns"] + ops["dur_ns"]).to_numpy()
    for rows in ops.groupby("tid", observed=True).indices.values():
        rows = rows[np.argsort(starts_all[rows], kind="stable")]
        reach = np.maximum.accumulate(ends_all[rows])
        first = np.ones(len(rows), dtype=bool)
        first[1:] = starts_all[rows][1:] >= reach[:-1]
        outer[rows[first]] = True
    return outer


def _busy_share(ops: pd.DataFrame) -> float:
    """The fraction of a trace's span of time its top-level CPU ops cover."""
    if ops.empty:
        return 0.0
    wall = float((ops["ts_ns"] + ops["dur_ns"]).max() - ops["ts_ns"].min())
    return min(float(ops["dur_ns"].to_numpy()[_top_level(ops)].sum()) / wall, 1.0) if wall > 0 else 0.0


RULE = Rule("graph-fusion", check)
