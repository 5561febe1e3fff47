"""``gil-contention``: Python threads have work but take turns on the GIL.

Two kinds of evidence, the direct one first:

- GIL snapshots (``py-spy dump`` a few times a second, :mod:`probes.gil_snapshots`): in how many
  the GIL is held, by which stage's work, and how many threads wait meanwhile — a thread the OS
  is not running, holding no GIL, whose stack is in the middle of work (not idle, not reading or
  writing a socket). Flagged when the GIL is held in at least half the snapshots and at least
  half a thread waits on average. py-spy's own ``--gil`` view is the idea: who holds it is what
  runs; measured on the foreign test server (4 client threads): pure-Python model held 85 %,
  1.25 waiting; JSON+base64 held 90 %, 1.45 waiting; NumPy model held 0 %, 0.1 waiting.
- Without snapshots: busy thread-time from the sampled stacks well above the CPU the process
  gets (psutil): the threads want more cores than they run on.

When the work of stages that have their own rule holds the GIL most of the time (≥ 50 % of the
held snapshots; (de)serialization, decode, preprocessing), that work is the cause: the finding
names it, and the diagnosis ranks that rule's finding (serialization-overhead, decode-bound,
preprocess-bound) before this one (:data:`CAUSE_RULES`; the verdict ``ranks_after`` that rule).
The garbage collector holds the GIL under whatever line allocated, so the snapshots cannot
name it: when the gc watch finds it running for half the held share or more, gc-pauses is the
cause (fitted on the development half: gc-aiohttp-vit, collector 59 % of the time, GIL held 57 %).
"""

from __future__ import annotations

import pandas as pd

from profiler.analysis.attribution import IDLE, SEND
from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_BUSY_THREADS = 1.5
MAX_CORES_USED = 1.3
MIN_SNAPSHOTS = 5
MIN_HELD = AnalysisContext.GIL_BOUND  # the one definition of "the GIL is the bottleneck"
MIN_WAITING = 0.5
MIN_CAUSE = 0.5
NOT_WAITING_FOR_GIL = (IDLE, "receive", SEND)  # asleep there: waiting for work or for the socket
CAUSE_RULES = {"deserialize": "serialization-overhead", "serialize": "serialization-overhead",
               "decode": "decode-bound", "preprocess": "preprocess-bound"}


def check(ctx: AnalysisContext) -> list[Verdict]:
    samples = ctx.samples
    if samples.empty:
        return []
    start, end = ctx.serving_window
    cores = int((ctx.meta.get("host") or {}).get("cores") or 1)
    if cores < 2:
        return []
    samples = samples[(samples["ts_ns"] >= start) & (samples["ts_ns"] < end)]
    window = float(end - start)
    busy = samples[samples["attributed"] != IDLE]
    busy_threads = float(busy["dur_ns"].sum()) / window if window > 0 else 0.0
    cores_used = ctx.cores_used
    snapshots = _snapshot_figures(ctx.gil_snapshots, start, end)
    if snapshots is not None:
        if snapshots["gil_held_share"] < MIN_HELD or snapshots["gil_waiting_threads_mean"] < MIN_WAITING:
            return []
        wanting = 1.0 + snapshots["gil_waiting_threads_mean"]  # the holder and those queued behind it
    else:
        if cores_used is None or busy_threads < MIN_BUSY_THREADS or cores_used > MAX_CORES_USED:
            return []
        wanting = busy_threads
    free = ctx.free_cores  # what other processes (a load generator on this host) leave
    speedup = min(wanting, free) / max(cores_used if cores_used is not None else 1.0, 0.1)
    removed = 1.0 - 1.0 / speedup if speedup > 1 else 0.0
    evidence = {"busy_threads_mean": round(busy_threads, 2), "cores_used": round(cores_used, 2) if cores_used else None,
                "cores": cores, **(snapshots or {})}
    cause = (snapshots or {}).get("gil_mostly_held_by")
    title = (f"threads wait for the GIL: held in {percent(snapshots['gil_held_share'])} of snapshots, "
             f"{snapshots['gil_waiting_threads_mean']:.1f} threads waiting on average" if snapshots else
             f"{busy_threads:.1f} Python threads busy on average, but the process uses {cores_used:.2f} of {cores} "
             "cores")
    if cause:
        title += f"; {cause} work holds it {percent(snapshots['gil_holders'][cause])} of the time"
    summary = ("run the Python-heavy work in several processes (more server workers, or a process pool), or move "
               "it into code that releases the GIL (NumPy, Pillow, ONNX Runtime do)")
    cause_rule = (snapshots or {}).get("gil_cause_rule")
    collector = ctx.gc
    if not cause_rule and snapshots and collector is not None and \
            collector[1] >= MIN_CAUSE * snapshots["gil_held_share"]:
        # the collector holds the GIL while it runs, under whatever line allocated: when it
        # runs for half the held time or more, it is the holder the snapshots cannot name
        cause_rule = evidence["gil_cause_rule"] = "gc-pauses"
        evidence["in_gc_share"] = round(collector[1], 3)
    if cause_rule:
        summary = f"shrink the work that holds the GIL (see {cause_rule}); then: " + summary
    fix = Fix(summary, "uvicorn app:app --workers 2      # or: ProcessPoolExecutor for the CPU-bound step",
              {"--workers": "2"})
    return [Verdict(title, removed, evidence, fix,
                    [EventRef("pyspy", stages=[cause] if cause else [], start_ns=start, end_ns=end)],
                    assumptions=[f"{wanting:.1f} threads want to run, {cores_used or 1.0:.2f} cores are used: "
                                 f"separate processes could use up to {min(wanting, free):.1f} (the cores other "
                                 "processes leave free)"],
                    ranks_after=(cause_rule,) if cause_rule else (), frees_cpu=False)]


def _snapshot_figures(snapshots: pd.DataFrame, start: int, end: int) -> dict | None:
    """GIL held share, threads waiting per snapshot and the stages holding it, in the window;
    None with too few snapshots to say."""
    snapshots = snapshots[(snapshots["ts_ns"] >= start) & (snapshots["ts_ns"] < end)]
    taken = snapshots["ts_ns"].nunique()
    if taken < MIN_SNAPSHOTS:
        return None
    holding = snapshots[snapshots["name"] == "holds-gil"]
    waiting = snapshots[(snapshots["name"] == "inactive") & ~snapshots["attributed"].isin(NOT_WAITING_FOR_GIL)]
    held = holding["ts_ns"].nunique()
    holders = holding["attributed"].value_counts() / max(held, 1)
    top = str(holders.index[0]) if len(holders) and holders.iloc[0] >= MIN_CAUSE else None
    rule_of = holders.index.map(lambda stage: CAUSE_RULES.get(stage, ""))
    by_rule = holders.groupby(rule_of).sum().drop("", errors="ignore")
    cause_rule = str(by_rule.idxmax()) if len(by_rule) and by_rule.max() >= MIN_CAUSE else None
    return {"snapshots": int(taken), "gil_held_share": round(held / taken, 3),
            "gil_waiting_threads_mean": round(len(waiting) / taken, 2),
            "gil_holders": {str(k): round(float(v), 3) for k, v in holders.head(4).items()},
            "gil_mostly_held_by": top, "gil_cause_rule": cause_rule}


RULE = Rule("gil-contention", check)
