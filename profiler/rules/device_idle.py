"""``device-idle``: the GPU waits for the host. Idle time is the part of the window in
which no kernel, copy or memset runs on a device (HTA's idle-time breakdown); from 30 %
idle the host, not the GPU, limits throughput."""

from __future__ import annotations

import numpy as np

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_IDLE = 0.30


def busy_ns(starts: np.ndarray, ends: np.ndarray) -> int:
    """Length of the union of intervals."""
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    gaps = np.maximum(starts[1:] - reach[:-1], 0)
    return int(reach[-1] - starts[0] - gaps.sum())


def check(ctx: AnalysisContext) -> list[Verdict]:
    torch = ctx.of("torch", "span")
    device = torch[torch["pid"] <= -100] if len(torch) else torch
    if len(device) < 10:
        return []
    findings = []
    for pid, lane in device.groupby("pid"):
        starts = lane["ts_ns"].to_numpy()
        ends = starts + lane["dur_ns"].to_numpy()
        window = int(ends.max() - starts.min())
        idle = 1.0 - busy_ns(starts, ends) / window if window > 0 else 0.0
        if idle < MIN_IDLE:
            continue
        fix = Fix("feed the GPU ahead of time: larger batches, pinned async copies, fewer host syncs, CUDA graphs "
                  "for small launches", "graph = torch.cuda.CUDAGraph()  # capture a fixed-shape forward once")
        # The idle fraction is of the GPU's window: taken as the same fraction of busy time (contract).
        findings.append(Verdict(f"GPU {-100 - int(pid)} idle {percent(idle)} of the window", idle * 0.5,
                                {"device": -100 - int(pid), "idle_fraction": round(idle, 3),
                                 "window_ms": round(window / 1e6, 2)}, fix,
                                [EventRef("torch", start_ns=int(starts.min()), end_ns=int(ends.max()))],
                                assumptions=["half the idle time is recovered by feeding the GPU ahead (batching, "
                                             "async copies, CUDA graphs); the rest is inherent"]))
    return findings


RULE = Rule("device-idle", check)
