"""``gil-contention``: more Python threads have work than the process gets cores for.
py-spy shows each thread's Python stack; a thread stuck on the GIL still shows the stack of
the work it wants to do. When the busy thread-time (threads not idle, from py-spy) is well
above the CPU the process actually gets (psutil), the threads are taking turns on the GIL."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.analysis.context import IDLE, AnalysisContext
from profiler.analysis.model import EventRef, Finding, Fix
from profiler.rules.common import finding

MIN_BUSY_THREADS = 1.5
MAX_CORES_USED = 1.3


def check(timeline: pd.DataFrame, ctx: AnalysisContext) -> list[Finding]:
    samples = ctx.samples
    if samples.empty:
        return []
    start, end = _loaded_window(ctx, samples)
    samples = samples[(samples["ts_ns"] >= start) & (samples["ts_ns"] < end)]
    window = float(end - start)
    busy = samples[samples["attributed"] != IDLE]
    busy_threads = float(busy["dur_ns"].sum()) / window if window > 0 else 0.0
    cpu = ctx.of("proc", "counter")
    cpu = cpu[(cpu["name"] == "cpu_percent") & (cpu["ts_ns"] >= start) & (cpu["ts_ns"] < end)]
    cores = int((ctx.meta.get("host") or {}).get("cores") or 1)
    if cpu.empty or cores < 2:
        return []
    cores_used = float(np.nanmean(cpu.groupby("ts_ns")["value"].sum().to_numpy())) / 100.0
    if busy_threads < MIN_BUSY_THREADS or cores_used > MAX_CORES_USED:
        return []
    speedup = min(busy_threads, cores) / max(cores_used, 0.1)
    removed = 1.0 - 1.0 / speedup if speedup > 1 else 0.0
    gain = ctx.amdahl(removed, [f"{busy_threads:.1f} threads want to run, {cores_used:.2f} cores are used: "
                                f"separate processes could use up to {min(busy_threads, cores):.1f}"])
    fix = Fix("run the Python-heavy work in several processes (more server workers, or a process pool), or move "
              "it into code that releases the GIL (NumPy, Pillow, ONNX Runtime do)",
              "uvicorn app:app --workers 2      # or: ProcessPoolExecutor for the CPU-bound step", {"--workers": "2"})
    return [finding(ctx, "gil-contention", f"{busy_threads:.1f} Python threads busy on average, but the process uses "
                    f"{cores_used:.2f} of {cores} cores", removed,
                    {"busy_threads_mean": round(busy_threads, 2), "cores_used": round(cores_used, 2), "cores": cores},
                    fix, gain, [EventRef("pyspy")])]


def _loaded_window(ctx: AnalysisContext, samples: pd.DataFrame) -> tuple[int, int]:
    """While requests were being served (an attach window often starts and ends idle)."""
    requests = ctx.wire_requests
    if len(requests):
        return int(requests["start_ns"].min()), int(requests["end_ns"].max())
    return int(samples["ts_ns"].min()), int((samples["ts_ns"] + samples["dur_ns"]).max())
