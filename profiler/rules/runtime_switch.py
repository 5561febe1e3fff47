"""``runtime-switch``: the model runs on a runtime (eager PyTorch, TorchScript) that this
host's calibration measures clearly slower than ONNX Runtime for the same model."""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import calibrated_on, inference_runtime, percent
from profiler.rules.contract import Rule, Verdict

MIN_INFERENCE_SHARE = 0.30
MIN_SPEEDUP = 1.15
# Eager PyTorch vs ONNX Runtime at batch 1 on CPU, for a model prof cannot time: the sample
# ResNet-18 measured x1.6 here (calibration) — a prior set before the corpus ran, not fitted on it.
ASSUMED_EAGER_SPEEDUP = 1.5


def check(ctx: AnalysisContext) -> list[Verdict]:
    share = ctx.service_share("inference")
    if share < MIN_INFERENCE_SHARE:  # first: an imported training trace has no inference share, nor a calibration
        return []
    runtime = inference_runtime(ctx)
    if runtime not in ("torch-eager", "torchscript"):
        return []
    calibration = ctx.calibration
    current = calibration.runtime_ms.get(runtime) or calibration.runtime_ms.get("torch-eager") if calibration else None
    ort = calibration.runtime_ms.get("ort") if calibration else None
    if current and ort:
        if current / ort < MIN_SPEEDUP:
            return []
        speedup, method = current / ort, "calibrated"
        assumption = (f"ONNX Runtime runs this model {speedup:.2f}x faster than {runtime} at batch 1 "
                      f"({calibrated_on(ctx, calibration)}, same thread count)")
    elif runtime == "torch-eager" and not ctx.meta.get("server"):
        # the server's model is TorchScript or eager code prof cannot time: an assumed factor, said so
        speedup, method = ASSUMED_EAGER_SPEEDUP, "amdahl"
        assumption = (f"ONNX Runtime assumed {ASSUMED_EAGER_SPEEDUP:g}x faster than eager PyTorch at batch 1 on a CPU "
                      "(the model could not be timed here: export it to ONNX and pass --model to measure it)")
    else:
        return []
    removed = share * (1.0 - 1.0 / speedup)
    fix = Fix("export the model to ONNX and serve it with ONNX Runtime (then consider INT8 on it: "
              "reduced-precision)",
              "torch.onnx.export(model, example, 'model.onnx', dynamo=True, external_data=False)\n"
              "session = onnxruntime.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
              {"--backend": "ort"})
    return [Verdict(f"inference on {runtime} ({percent(share)} of the work): ONNX Runtime is {speedup:.1f}x faster "
                    + ("here" if method == "calibrated" else "(assumed)"), removed, {"runtime": runtime, "inference_share": round(share, 3),
                                      "calibrated_ms": {runtime: current, "ort": ort}},
                    fix, [EventRef("pyspy", stages=["inference"])], method, [assumption])]


RULE = Rule("runtime-switch", check)
