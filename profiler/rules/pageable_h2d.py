"""``pageable-h2d``: host-to-device copies from pageable memory. CUDA stages them through a
pinned bounce buffer, synchronously for the host; Nsight Systems' expert rules flag every
pageable memcpy for this reason. Pinned (page-locked) buffers copy at full bandwidth and
can overlap compute."""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.measures import arg_field
from profiler.rules.contract import Rule, Verdict

PINNED_SAVING = 0.5  # pinned copies run at about twice the bandwidth of staged pageable ones (assumed)


def check(ctx: AnalysisContext) -> list[Verdict]:
    copies = ctx.kineto_category("gpu_memcpy")
    if copies.empty:
        return []
    pageable = copies[(arg_field(copies, "copy") == "HtoD") & (arg_field(copies, "memory") == "pageable")]
    if pageable.empty:
        return []
    copy_ns = float(pageable["dur_ns"].sum())
    nbytes = int(arg_field(pageable, "bytes", r"(\d+)").fillna("0").astype(int).sum())
    window = _gpu_window(ctx)
    fraction = copy_ns / window if window else 0.0
    removed = fraction * PINNED_SAVING  # a fraction of the GPU window, taken as the same fraction of busy time
    fix = Fix("allocate input tensors in pinned memory and copy asynchronously",
              "batch = batch.pin_memory()                  # or DataLoader(pin_memory=True)\n"
              "batch = batch.to('cuda', non_blocking=True)", {"--pinned": "1"})
    evidence = {"pageable_htod_copies": len(pageable), "bytes": nbytes, "copy_ms": round(copy_ns / 1e6, 3),
                "fraction_of_gpu_window": round(fraction, 4)}
    return [Verdict(f"{len(pageable)} host-to-device copies from pageable memory ({nbytes / 1e6:.1f} MB)", removed,
                    evidence, fix, [EventRef("torch", names=sorted(set(pageable["name"].astype(str))), stages=["h2d"])],
                    assumptions=["pinned copies take half the time of pageable ones (bounce buffer avoided)",
                                 "copy time is on the critical path (not overlapped)"])]


def _gpu_window(ctx: AnalysisContext) -> float:
    torch = ctx.of("torch", "span")
    return float((torch["ts_ns"] + torch["dur_ns"]).max() - torch["ts_ns"].min()) if len(torch) else 0.0


RULE = Rule("pageable-h2d", check)
