"""``model-reload``: the model is built while requests are being served — an
``InferenceSession(...)``, ``torch.load`` or model constructor inside the request path.
Construction belongs to start-up; any of it inside the window is repeated waste."""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_SHARE = 0.02


def check(ctx: AnalysisContext) -> list[Verdict]:
    requests = ctx.requests
    load_ns = float(ctx.stage_ns.get("model_load", 0.0))
    if requests is None or load_ns <= 0:
        return []
    if ctx.stage_basis == "stage spans":  # spans of loads during the window, not the start-up load
        spans = ctx.stage_spans
        loads = spans[(spans["stage"] == "model_load") & (spans["ts_ns"] >= _first_request_ns(ctx))]
        load_ns, count = float(loads["dur_ns"].sum()), len(loads)
    else:
        count = None
    share = load_ns / ctx.service_ns if ctx.service_ns else 0.0
    if share < MIN_SHARE:
        return []
    fix = Fix("build the model (InferenceSession / torch.load / constructor) once at start-up and reuse it",
              "SESSION = onnxruntime.InferenceSession('model.onnx')   # module level, at start-up\n"
              "def classify(x):\n    return SESSION.run(None, {'input': x})", {"--reload-per-request": "0"})
    evidence = {"model_load_ms": round(load_ns / 1e6, 1), "share_of_work": round(share, 3),
                "basis": ctx.stage_basis}
    if count is not None:
        evidence["loads_during_window"] = count
    return [Verdict(f"model construction during serving: {percent(share)} of the work", share, evidence, fix,
                    [EventRef("stages" if count is not None else "pyspy", stages=["model_load"])],
                    assumptions=["the model is built once at start-up instead"])]


def _first_request_ns(ctx: AnalysisContext) -> int:
    spans = ctx.stage_spans
    served = spans[spans["stage"] != "model_load"]
    return int(served["ts_ns"].min()) if len(served) else 0


RULE = Rule("model-reload", check)
