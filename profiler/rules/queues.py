"""``implicit-queue``: a stage runs one request at a time although several are in flight and
cores are free — a queue the server never named: a lock around the model, a one-thread
executor, blocking work on an event loop, a semaphore of one.

Evidence (py-spy samples laid over each other, :mod:`profiler.measures.concurrency`): during
the serving window at least one thread is in the stage most of the time (≥ 60 %) and two
threads almost never (≤ 10 % of that), while requests in flight (Little's law) are two or
more; where the waiting threads park (a line of the server's own code) and whether one
thread or many take turns say which kind of queue it is.

Gain, a queue model on measured utilizations: today throughput is the serial stage's
utilization over its service time, u/S. Letting c = min(cores, requests in flight) run it at
once lifts that bound to c/S, so throughput can rise by c/u — until the CPU runs out
(cores / cores used today) or the GIL does (1 / the share of snapshots holding it). The
smallest of the three is the estimate.
"""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_BUSY = 0.60  # the stage is carried by a thread at least this much of the window ...
MAX_PARALLEL = 0.10  # ... and by two threads at most this fraction of that
MIN_IN_FLIGHT = 2.0
ONE_THREAD = 0.9  # one thread carries this much of the stage: a one-worker executor or a loop
# The model is the resource servers put behind a lock or a one-thread executor. Other stages run
# one at a time on an event loop by design (async servers decode JSON on the loop): their cost is
# their own rules' (serialization-overhead, decode-bound, ...), not a queue's. Fitted on the
# development half: a JSON-on-the-loop FastAPI server read as a deserialize queue.
STAGES = ("inference",)

SNIPPET_LOCK = """# ONNX Runtime sessions are thread-safe: no lock around run()
outputs = session.run(None, {"input": batch})
# a model that is not thread-safe: one per worker process (gunicorn -w 2), or batch what waits"""
SNIPPET_ONE = """executor = ThreadPoolExecutor(max_workers=2)   # one per core (intra-op threads = 1)
# FastAPI: a plain `def` endpoint runs in the thread pool; `async def` must not call the model"""


def check(ctx: AnalysisContext) -> list[Verdict]:
    if ctx.stage_basis != "py-spy attribution" or ctx.cores < 2:
        return []  # the server's own spans name its queue (the batching rules judge it)
    requests = ctx.requests
    if requests is None or requests.in_flight_mean < MIN_IN_FLIGHT:
        return []
    candidates = [(stage, ctx.overlap(stage)) for stage in STAGES]
    serial = [(stage, o) for stage, o in candidates
              if o.at_least_one >= MIN_BUSY and o.at_least_two <= MAX_PARALLEL * o.at_least_one]
    if not serial:
        return []
    stage, busy = max(serial, key=lambda item: item[1].at_least_one)  # (one stage today: the model)
    samples = ctx.samples
    mine = samples[samples["attributed"] == stage]
    per_thread = mine.groupby("tid")["dur_ns"].sum()
    one_thread = bool(len(per_thread) and per_thread.max() >= ONE_THREAD * per_thread.sum())
    parked = next((p for p in ctx.parked if p.threads_mean >= 0.5), None)

    parallel = min(ctx.free_cores, requests.in_flight_mean)
    bounds = {"parallel": parallel / busy.at_least_one}
    assumptions = [f"{parallel:.0f} at once instead of one: the {stage} bound on throughput rises "
                   f"{bounds['parallel']:.2f}x (it is busy {percent(busy.at_least_one)} of the time today)"]
    if ctx.cores_used:
        bounds["cpu"] = ctx.free_cores / ctx.cores_used
        assumptions.append(f"until the CPU runs out: {ctx.cores_used:.2f} of the {ctx.free_cores:.2f} cores other "
                           "processes leave free in use today")
    held = ctx.gil.held_share if ctx.gil is not None else None
    if held:
        bounds["gil"] = 1.0 / held
        assumptions.append(f"until the GIL runs out: held in {percent(held)} of snapshots today")
    speedup = max(min(bounds.values()), 1.0)
    evidence = {"stage": stage, "one_thread_busy": round(busy.at_least_one, 3),
                "two_threads_busy": round(busy.at_least_two, 3), "in_flight_mean": round(requests.in_flight_mean, 2),
                "cores": ctx.cores, "cores_used": round(ctx.cores_used, 2) if ctx.cores_used else None,
                "threads_carrying": int(len(per_thread)),
                "bounds_x": {k: round(v, 2) for k, v in bounds.items()}}
    if parked is not None:
        evidence.update(parked_at=parked.where, parked_threads_mean=round(parked.threads_mean, 2))
    how = "one thread runs it" if one_thread else "threads take turns"
    where = f"; {parked.threads_mean:.1f} threads wait at {parked.where}" if parked is not None else ""
    title = (f"{stage} runs one request at a time ({how}) with {requests.in_flight_mean:.1f} in flight "
             f"and {ctx.cores} cores{where}")
    if one_thread:
        fix = Fix("run the model in as many threads as cores (a pool of 2, not 1; never on the event loop), or "
                  "gather what waits into one batched call if the model takes a batch", SNIPPET_ONE)
    else:
        fix = Fix("remove the lock around the model (ONNX Runtime and torch inference are thread-safe), or give "
                  "each worker process its own model; if the model takes a batch, batch what waits instead",
                  SNIPPET_LOCK)
    removed = 1.0 - 1.0 / speedup
    return [Verdict(title, removed, evidence, fix,
                    [EventRef("pyspy", stages=[stage], start_ns=ctx.serving_window[0],
                              end_ns=ctx.serving_window[1])],
                    "queue model", assumptions, frees_cpu=False)]


RULE = Rule("implicit-queue", check)
