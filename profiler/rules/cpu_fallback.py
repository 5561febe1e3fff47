"""``cpu-fallback``: in an ONNX Runtime session that runs on CUDA (or TensorRT), some nodes
run on the CPU execution provider — each one forces copies across PCIe and a sync."""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.measures import arg_field
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


def check(ctx: AnalysisContext) -> list[Verdict]:
    nodes = ctx.ort_nodes
    if nodes.empty:
        return []
    providers = arg_field(nodes, "provider")
    if not providers.isin(_GPU_PROVIDERS).any():
        return []
    on_cpu = nodes[providers == "CPUExecutionProvider"]
    if on_cpu.empty:
        return []
    fraction = float(on_cpu["dur_ns"].sum()) / float(nodes["dur_ns"].sum())
    ops = arg_field(on_cpu, "op").value_counts().head(5)
    share = ctx.service_share("inference") or 1.0
    removed = share * fraction * 0.8
    fix = Fix("make every node run on the GPU provider: use ops/opset the CUDA EP supports, check "
              "session.get_providers() and ORT's verbose log for 'CPU' assignments",
              "so = onnxruntime.SessionOptions(); so.log_severity_level = 1   # logs node placement")
    return [Verdict(f"{len(on_cpu)} ORT nodes ran on the CPU in a GPU session ({percent(fraction)} of node time)",
                    removed, {"cpu_nodes": len(on_cpu), "cpu_node_time_fraction": round(fraction, 3),
                              "ops": {str(k): int(v) for k, v in ops.items()}}, fix,
                    [EventRef("ort", names=sorted(set(on_cpu["name"].astype(str)))[:20])],
                    assumptions=["the fallen-back nodes run 5x faster on the GPU and their copies disappear "
                                 "(assumed)"])]


RULE = Rule("cpu-fallback", check)
