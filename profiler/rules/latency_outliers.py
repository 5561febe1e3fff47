"""``latency-outliers``: the tail is far from the median (p99 more than 3x p50). The rule
says where the slow requests are: bunched at the start of the window (warm-up: lazy
initialization, first-call compilation), or spread out (garbage collection, contention).
Spread-out stalls recur: the time every request at ≥ 3x the p50 adds beyond the p50 is a share
of request time, and removing it is a latency-model gain (closed-loop clients); warm-up is a
one-time cost with no steady gain."""

from __future__ import annotations

import numpy as np

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.contract import Rule, Verdict

TAIL_RATIO = 3.0


def check(ctx: AnalysisContext) -> list[Verdict]:
    requests = ctx.requests
    if requests is None or requests.count < 50:
        return []
    p50, p99 = requests.percentile(50), requests.percentile(99)
    if p50 <= 0 or p99 < TAIL_RATIO * p50:
        return []
    latency = requests.latency_ms
    slow = latency >= p99
    first_tenth = np.arange(len(latency)) < max(len(latency) // 10, 1)
    warmup = float((slow & first_tenth).sum()) / max(int(slow.sum()), 1)
    gc_ns = _gc_time(ctx)
    in_gc = (ctx.gc or (0, 0.0))[1]
    cause = "warm-up" if warmup >= 0.5 else "garbage collection" if gc_ns > 0 or in_gc >= 0.05 else \
        "unexplained (contention?)"
    outliers = latency >= TAIL_RATIO * p50  # every request the tail holds, not only the top 1 %
    excess = float(np.clip(latency - p50, 0, None)[outliers].sum()) / 1e3
    share = min(excess / (requests.total_ns / 1e9), 0.95) if requests.total_ns else 0.0
    fix = Fix("warm the model up before taking traffic (run a few dummy batches), and freeze long-lived objects "
              "out of the garbage collector", "for _ in range(3):\n    session.run(None, {'input': dummy})\n"
              "gc.freeze()   # after start-up")
    evidence = {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "slow_in_first_tenth": round(warmup, 2),
                "gc_ms": round(gc_ns / 1e6, 1), "cause": cause, "outliers": int(outliers.sum()),
                "tail_share_of_request_time": round(share, 4)}
    title = f"p99 {p99:.0f} ms is {p99 / p50:.1f}x the p50 ({p50:.0f} ms); likely {cause}"
    if ctx.gc is None and cause != "warm-up":
        evidence["next_step"] = ("the garbage-collector watch was off: prof attach PID with its default --gc-watch 4 "
                                 "shows whether the garbage collector makes the stalls")
    if cause == "warm-up":  # a one-time cost: no steady gain to estimate
        return [Verdict(title, ctx.busy_fraction(share), evidence, fix, [EventRef(requests.source)], gain_method=None,
                        ranks_after=("gc-pauses",))]
    return [Verdict(title, share, evidence, fix, [EventRef(requests.source)], "latency model",
                    [f"{int(outliers.sum())} requests at >= {TAIL_RATIO:g}x the p50 add {share:.0%} to request time; "
                     "removing the stalls returns it", "clients send the next request when the answer comes "
                     "(closed loop): throughput rises as latency falls"],
                    ranks_after=("gc-pauses",), of_latency=True)]


RULE = Rule("latency-outliers", check)


def _gc_time(ctx: AnalysisContext) -> float:
    samples = ctx.samples
    if samples.empty:
        return 0.0
    names = samples["name"].astype(str)
    return float(samples.loc[names.str.contains(r"^gc\.|collect", regex=True), "dur_ns"].sum())
