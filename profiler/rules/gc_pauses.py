"""``gc-pauses``: the cyclic garbage collector stops every Python thread (it holds the GIL)
often and long — a large heap of long-lived objects scanned again by each full collection, or
reference cycles made on every request.

Evidence: the native samples of the garbage-collector watch (:mod:`probes.gc_watch`: a slow
``py-spy record --native`` beside the main recorder) in which a thread is inside
``gc_collect_main`` — a share of wall time the collector runs, during which no Python code
does. Flagged from 10 % of the watched time (and two samples at least). Gain: the collector's share of the time, 90 % of it removed
(``gc.freeze()`` after start-up moves the long-lived heap out of every collection; fewer cycles
per request make fewer collections; 0.7 fitted on the development half of the scenario corpus). latency-outliers,
where present, ranks after this finding: collections are the stalls it sees.
"""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_SHARE = 0.10
MIN_HITS = 2
# Fitted on the development half (gc-aiohttp-vit: x2.53 measured at 86 % of native snapshots in the
# collector; gc+logging-aiohttp-resnet: x1.96 at 71 %; native dumps then, the watch's samples now): freezing the long-lived heap removed 0.70 and
# 0.69 of the collector's share; 0.9 (the prior) overestimated both by half.
FREED = 0.7

SNIPPET = """import gc
load_model_and_tables()        # everything long-lived, allocated at start-up
gc.freeze()                    # moved to a permanent generation: no collection scans it again
gc.set_threshold(50_000, 20, 20)   # and fewer young collections for request garbage"""


def check(ctx: AnalysisContext) -> list[Verdict]:
    figures = ctx.gc
    if figures is None:
        return []
    taken, share = figures
    if share < MIN_SHARE or share * taken < MIN_HITS - 1e-9:
        return []
    fix = Fix("keep the garbage collector off the long-lived heap: gc.freeze() once the model and tables are "
              "loaded; avoid reference cycles per request; raise gc thresholds", SNIPPET)
    start, end = ctx.serving_window
    return [Verdict(f"the garbage collector runs {percent(share)} of the time (in {round(share * taken)} of {taken} "
                    "native samples), stopping every Python thread", share * FREED,
                    {"native_samples": taken, "in_gc_share": round(share, 3)}, fix,
                    [EventRef("pyspy", names=["<gc>"], start_ns=start, end_ns=end)],
                    assumptions=[f"the collector holds the GIL {percent(share)} of the time; freezing the long-lived "
                                 f"heap removes {FREED:.0%} of that (fitted on the corpus's development half)"])]


RULE = Rule("gc-pauses", check)
