"""``thread-oversubscription``: more threads burn CPU than there are cores, so they preempt
each other (involuntary context switches climb) and caches thrash. On a 2-core host an
oversubscribed PyTorch slows by an order of magnitude; pin intra-op threads explicitly."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Finding, Fix
from profiler.rules.common import finding

BUSY_THREAD_PERCENT = 20.0
MIN_INVOLUNTARY_PER_CORE = 200.0  # per second; an uncontended server sees tens


def check(timeline: pd.DataFrame, ctx: AnalysisContext) -> list[Finding]:
    proc = ctx.of("proc", "counter")
    if proc.empty:
        return []
    cores = int((ctx.meta.get("host") or {}).get("cores") or 1)
    per_thread = proc[proc["name"] == "thread_cpu_percent"]
    busy = per_thread.groupby("tid")["value"].mean()
    busy = busy[busy >= BUSY_THREAD_PERCENT]
    invol = proc[proc["name"] == "ctx_switches_involuntary_per_s"]
    invol_rate = float(np.nanmean(invol.groupby("ts_ns")["value"].sum().to_numpy())) if len(invol) else 0.0
    if len(busy) <= cores or invol_rate < MIN_INVOLUNTARY_PER_CORE * cores:
        return []
    removed = min(0.5, 0.1 * (len(busy) / cores))
    gain = ctx.amdahl(removed, [f"{len(busy)} busy threads on {cores} cores; pinning threads to the core count "
                                "removes preemption overhead (assumed 10% per thread per core over)"])
    fix = Fix(f"pin thread pools to the cores: intra-op threads x workers <= {cores}",
              "torch.set_num_threads(1); os.environ['OMP_NUM_THREADS'] = '1'\n"
              "options.intra_op_num_threads = 1   # onnxruntime.SessionOptions", {"--intra-op-threads": "1"})
    return [finding(ctx, "thread-oversubscription", f"{len(busy)} threads busy (>{BUSY_THREAD_PERCENT:.0f}% CPU) on "
                    f"{cores} cores, {invol_rate:,.0f} involuntary context switches/s", removed,
                    {"busy_threads": int(len(busy)), "cores": cores, "involuntary_switches_per_s": round(invol_rate),
                     "busy_thread_cpu_percent": {int(t): round(float(v), 1) for t, v in busy.nlargest(8).items()}},
                    fix, gain, [EventRef("proc", names=["thread_cpu_percent"])])]
