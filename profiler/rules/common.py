"""Evidence helpers shared by the rules: what runtime and precision the inference measurably
used, per-request stage times, kineto categories, and how to word a sample-server knob."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.analysis.context import AnalysisContext

# TensorBoard / XProf input-pipeline analysis: a step is "highly input bound" when input
# takes 20 % or more of it, "moderately" from 5 %. We raise a finding from the higher mark.
INPUT_BOUND_SHARE = 0.20
_INT8_OPS = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear"}


def knob(ctx: AnalysisContext, flag: str) -> str | None:
    """A sample-server flag's value in this session (wording only; rules never judge by it)."""
    knobs = ctx.server_knobs
    return knobs[knobs.index(flag) + 1] if flag in knobs and knobs.index(flag) + 1 < len(knobs) else None


def sample_server(ctx: AnalysisContext) -> bool:
    return bool(ctx.meta.get("server"))


def per_request_ms(ctx: AnalysisContext, stage: str) -> float | None:
    """Mean time of one stage per request: the stage breakdown's own figure (None without it)."""
    row = next((r for r in ctx.stages if r.stage == stage), None)
    return row.per_request_ms if row is not None and row.total_ms > 0 else None


def inference_runtime(ctx: AnalysisContext) -> str | None:
    """ort, torch-eager, torchscript or torch-compile, from the frames and traces seen."""
    if len(ctx.of("ort")):
        return "ort"
    samples = ctx.samples
    inference = samples[samples["attributed"] == "inference"]
    files = " ".join({path for sid in inference["stack_id"].unique()[:200]
                      for _, path, _ in ctx.stacks.frames_of(int(sid))})
    if "onnxruntime" in files:
        return "ort"
    if "torch/_dynamo" in files or "torch/_inductor" in files:
        return "torch-compile"
    if "torch/jit" in files:
        return "torchscript"
    if "torch/nn/modules" in files:
        return "torch-eager"
    torch = ctx.of("torch", "span")
    if len(torch):
        return "torch-eager"
    return None


def ort_op_types(ctx: AnalysisContext) -> pd.Series:
    return ctx.ort_node_ops.dropna()


# An fp32 model measures at or above ~its calibrated time (co-running work only stretches it); an
# INT8 one, even stretched, stays well below: below this fraction of the fp32 time it is not fp32.
FP32_TIME_FRACTION = 0.85


def runs_int8(ctx: AnalysisContext) -> bool | None:
    """Whether the ORT graph is quantized: its node op types say so, or, without a trace, the
    graph of the model file prof attach found the server had loaded; None when neither tells."""
    ops = ort_op_types(ctx)
    if ops.empty:
        from probes.model_discovery import onnx_quantized
        from profiler.analysis.calibration_policy import discovered_onnx

        found = discovered_onnx(ctx.meta)
        return onnx_quantized(found) if found else None
    return bool(set(ops.unique()) & _INT8_OPS or ops.str.contains("QuantizeLinear").any())


def batch_sizes(ctx: AnalysisContext) -> np.ndarray:
    """Requests per inference batch, from the stage spans' batch ids (empty without them)."""
    spans = ctx.stage_spans
    batched = spans[(spans["batch_id"] >= 0) & spans["request_id"].notna()]
    if batched.empty:
        return np.zeros(0)
    return batched.groupby("batch_id")["request_id"].nunique().to_numpy()


def percent(x: float) -> str:
    return f"{100 * x:.0f}%"


def calibrated_on(ctx: AnalysisContext, calibration) -> str:
    """How a calibrated factor was measured, for a finding's assumptions: on which model."""
    from profiler.analysis.calibration_model import SAMPLE_MODEL

    if calibration.model != SAMPLE_MODEL:
        return f"calibrated on this host with {calibration.model.rsplit('/', 1)[-1]}"
    if ctx.meta.get("server"):  # the sample server runs the sample model
        return "calibrated on this host"
    return ("calibrated on this host with the sample ResNet-18, not your model "
            "(prof report --model FILE.onnx times yours)")


def int8_factor(calibration, batch: int) -> float:
    """INT8 static's speed-up over fp32 at ``batch`` (0 where it was not timed)."""
    return float(calibration.precision_speedup.get(f"int8-static@{batch}", 0.0))


def runs_int8_by_time(ctx: AnalysisContext, calibration, measured_ms: float) -> bool:
    """Whether inference runs INT8 where the calibration timed the sample model in fp32 (so its
    times need the INT8 factor): the ORT trace's op types say so, or, without a trace, the time
    per request is well below the calibrated fp32 time (co-running work only stretches an fp32
    model; reduced-precision tells fp32 the same way). False when the calibration timed the
    server's own file: its times are already those of the model served."""
    from profiler.analysis.calibration_model import SAMPLE_MODEL

    if calibration.model != SAMPLE_MODEL:
        return False  # the calibration timed the served file itself: its times need no precision factor
    quantized = runs_int8(ctx)
    if quantized is not None:
        return quantized
    return bool(int8_factor(calibration, 1) > 1.0 and measured_ms < FP32_TIME_FRACTION * calibration.per_image_ms(1))
