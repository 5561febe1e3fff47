"""``reduced-precision``: the model computes in fp32 where a cheaper precision is measured
(or, on a GPU, known) to be faster: INT8 on CPU, FP16 on GPU.

CPU evidence: an ORT trace without quantized ops, or — for a server we did not write — an
inference time per request that matches this host's calibrated fp32 time rather than its
int8 time. GPU evidence: GEMM/convolution kernels in single precision (``sgemm``,
``s1688gemm`` ...) in a kineto trace; the GPU gain is an assumption (no GPU here to
calibrate on), stated in the finding."""

from __future__ import annotations

import pandas as pd

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import FP32_TIME_FRACTION, calibrated_on, inference_runtime, per_request_ms, percent, runs_int8
from profiler.rules.contract import Rule, Verdict

MIN_INFERENCE_SHARE = 0.30
MIN_SPEEDUP = 1.2
_FP32_KERNEL = r"sgemm|s\d{3,4}gemm|_fp32|f32_|float, float"
_HEAVY_KERNEL = r"gemm|conv|cutlass|cudnn"
GPU_FP16_SPEEDUP = 2.0  # assumed: tensor cores at half precision; calibrate on the GPU to know


def check(ctx: AnalysisContext) -> list[Verdict]:
    kernels = ctx.kineto_category("kernel")
    if len(kernels):
        return _gpu(ctx, kernels)
    return _cpu(ctx)


def _cpu(ctx: AnalysisContext) -> list[Verdict]:
    share = ctx.service_share("inference")
    if share < MIN_INFERENCE_SHARE or inference_runtime(ctx) != "ort":
        # INT8 here means ONNX Runtime: for torch, runtime-switch is the first step; for a model
        # prof cannot see, the calibrated figures are not its figures
        return []
    calibration = ctx.calibration
    if calibration is None or not calibration.covers(1):
        return []
    speedup = float(calibration.precision_speedup.get("int8-static@1", 0.0))
    if speedup < MIN_SPEEDUP:
        return []
    evidence = {"inference_share": round(share, 3), "calibrated_int8_speedup": round(speedup, 2)}
    quantized = runs_int8(ctx)
    if quantized is True:
        return []
    if quantized is None:  # no trace: tell by time, against the calibrated fp32 and int8 times
        measured = per_request_ms(ctx, "inference")
        fp32 = calibration.per_image_ms(1)
        if not measured:
            return []
        evidence.update(inference_ms_per_request=round(measured, 2), calibrated_fp32_ms=round(fp32, 2),
                        calibrated_int8_ms=round(fp32 / speedup, 2))
        # Co-running work only ever stretches the measured time (2-2.5x seen here with decode
        # threads beside inference), so an fp32 model measures at or above its calibrated time;
        # an int8 one, even stretched, stays well below it.
        if measured < FP32_TIME_FRACTION * fp32:
            return []
    else:
        evidence["ort_ops"] = "no quantized ops in the ORT trace"
    removed = share * (1.0 - 1.0 / speedup)
    fix = Fix("quantize the model to INT8 (static, per-channel) and serve it with ONNX Runtime",
              "from onnxruntime.quantization import quantize_static, QuantType\n"
              "quantize_static('model.onnx', 'model.int8.onnx', calibration_reader, "
              "weight_type=QuantType.QInt8, per_channel=True)", {"--precision": "int8-static", "--backend": "ort"})
    return [Verdict(f"inference ({percent(share)} of the work) runs in fp32; INT8 is {speedup:.1f}x faster on this CPU",
                    removed, evidence, fix, [EventRef("ort" if len(ctx.of("ort")) else "pyspy", stages=["inference"])],
                    "calibrated", [f"INT8 (static, QDQ) inference {speedup:.2f}x faster, {calibrated_on(ctx, calibration)}",
                                   "accuracy must be checked on your data after quantization"])]


def _gpu(ctx: AnalysisContext, kernels: pd.DataFrame) -> list[Verdict]:
    names = kernels["name"].astype(str)
    heavy = kernels[names.str.contains(_HEAVY_KERNEL, case=False, regex=True)]
    if heavy.empty:
        return []
    fp32 = heavy[heavy["name"].astype(str).str.contains(_FP32_KERNEL, regex=True)]
    busy = float(kernels["dur_ns"].sum())
    fraction = float(fp32["dur_ns"].sum()) / busy if busy else 0.0
    if fraction < 0.2:
        return []
    removed = fraction * (1 - 1 / GPU_FP16_SPEEDUP)  # of GPU kernel time: the GPU taken as the bottleneck
    fix = Fix("run the model in FP16 (autocast, or an FP16 ONNX/TensorRT engine)",
              "with torch.autocast('cuda', dtype=torch.float16):\n    logits = model(batch)",
              {"--precision": "fp16", "--device": "cuda"})
    top = fp32.groupby(fp32["name"].astype(str))["dur_ns"].sum().nlargest(3)
    return [Verdict(f"{percent(fraction)} of GPU kernel time is fp32 GEMM/convolution", removed,
                    {"fp32_kernel_fraction": round(fraction, 3), "fp32_kernels": len(fp32),
                     "top_kernels": [n[:80] for n in top.index]}, fix,
                    [EventRef("torch", names=[n[:200] for n in top.index])],
                    assumptions=[f"fp32 GEMM/conv kernels are {percent(fraction)} of GPU kernel time",
                                 f"assumed {GPU_FP16_SPEEDUP:.0f}x faster at FP16 on tensor cores (not calibrated: "
                                 "no GPU on the analysing host)", "the GPU is the bottleneck"])]


RULE = Rule("reduced-precision", check)
