"""``runtime-switch``: the model runs on a runtime (eager PyTorch, TorchScript) that this
host's calibration measures clearly slower than ONNX Runtime for the same model."""

from __future__ import annotations

import pandas as pd

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Finding, Fix
from profiler.rules.common import calibrated_on, finding, inference_runtime, percent

MIN_INFERENCE_SHARE = 0.30
MIN_SPEEDUP = 1.15


def check(timeline: pd.DataFrame, ctx: AnalysisContext) -> list[Finding]:
    runtime = inference_runtime(ctx)
    share = ctx.service_share("inference")
    calibration = ctx.calibration
    if runtime not in ("torch-eager", "torchscript") or share < MIN_INFERENCE_SHARE or calibration is None:
        return []
    current = calibration.runtime_ms.get(runtime) or calibration.runtime_ms.get("torch-eager")
    ort = calibration.runtime_ms.get("ort")
    if not current or not ort or current / ort < MIN_SPEEDUP:
        return []
    speedup = current / ort
    removed = share * (1.0 - 1.0 / speedup)
    gain = ctx.amdahl(removed, [f"ONNX Runtime runs this model {speedup:.2f}x faster than {runtime} at batch 1 "
                                f"({calibrated_on(ctx, calibration)}, same thread count)"], "calibrated")
    fix = Fix("export the model to ONNX and serve it with ONNX Runtime (then consider INT8 on it: "
              "reduced-precision)",
              "torch.onnx.export(model, example, 'model.onnx', dynamo=True, external_data=False)\n"
              "session = onnxruntime.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
              {"--backend": "ort"})
    return [finding(ctx, "runtime-switch", f"inference on {runtime} ({percent(share)} of the work): ONNX Runtime "
                    f"is {speedup:.1f}x faster here", removed,
                    {"runtime": runtime, "inference_share": round(share, 3), "calibrated_ms": {runtime: current,
                                                                                             "ort": ort}},
                    fix, gain, [EventRef("pyspy", stages=["inference"])])]
