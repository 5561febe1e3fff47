"""``host-sync``: the host blocks on the GPU (stream/device/event synchronization, often an
``.item()``, ``.cpu()`` or a blocking copy inside the loop), so it cannot queue the next
work while the GPU runs. Nsight Systems' expert rules list synchronization APIs for the
same reason; HTA counts the host time spent in them."""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.measures import arg_field
from profiler.rules.contract import Rule, Verdict

MIN_SYNCS = 3
_SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def check(ctx: AnalysisContext) -> list[Verdict]:
    syncs = ctx.kineto_category("cuda_sync")
    runtime = ctx.kineto_category("cuda_runtime")
    blocking = runtime[runtime["name"].astype(str).isin(_SYNC_CALLS)] if len(runtime) else runtime
    if len(syncs) + len(blocking) < MIN_SYNCS:
        return []
    kinds = arg_field(syncs, "cuda_sync_kind").value_counts().to_dict() if len(syncs) else {}
    torch = ctx.of("torch", "span")
    window = float((torch["ts_ns"] + torch["dur_ns"]).max() - torch["ts_ns"].min())
    wait_ns = float(syncs["dur_ns"].sum() + blocking["dur_ns"].sum())
    fraction = wait_ns / window if window else 0.0
    removed = fraction * 0.5  # a fraction of the traced window, taken as the same fraction of busy time
    fix = Fix("keep results on the device until the batch is done; copy back once, asynchronously",
              "logits = model(x)                        # no .item()/.cpu() per step\n"
              "out = logits.to('cpu', non_blocking=True); torch.cuda.current_stream().synchronize()  # once")
    evidence = {"sync_events": len(syncs), "sync_kinds": {str(k): int(v) for k, v in kinds.items()},
                "blocking_runtime_calls": len(blocking), "blocked_ms": round(wait_ns / 1e6, 3),
                "fraction_of_window": round(fraction, 4)}
    return [Verdict(f"{len(syncs) + len(blocking)} host-device synchronizations", removed, evidence, fix,
                    [EventRef("torch", names=sorted({*syncs["name"].astype(str), *blocking["name"].astype(str)}))],
                    assumptions=["half the blocked time becomes overlap once the host stops waiting each step"])]


RULE = Rule("host-sync", check)
