"""Time on the request path that is neither the model nor the image: ``downstream-wait`` (a call
to another service — HTTP, Redis, a database — made while the client waits) and
``blocking-io`` (logging and its handlers: formatting large records, writing and flushing them
synchronously).

Evidence: py-spy samples of the serving window whose stack passes through the client library
or the logging package (waiting in a socket read or at work alike), as a fraction of the
requests' summed latency — the share of request time spent there (Little's law: threads in
that call at once, over requests in flight).

Gain: the fix takes most of that time off each request (:data:`CUT`: a batched or cached
downstream call, one short log line or a queue handler). Clients of a server that is not short
of CPU send as fast as answers come, so throughput rises as latency falls — up to the CPU the
server has free (cores / cores used today). A server short of CPU gains only the CPU the work
itself burns: its share of busy thread time — or, when the GIL bounds the server (held in at
least half the snapshots), the share of snapshots in which this work holds it; so does work that
takes a larger share of busy time than of request time (formatting records is work, not a
wait). Either share from 15 % raises the finding.
"""

from __future__ import annotations

import re

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.measures.concurrency import clipped_ns, under
from profiler.measures.stages import WAIT_LABELS
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_SHARE = 0.15  # of request time
CUT = 0.8  # of that time, gone with the fix (assumed, said in the finding)
CPU_SHORT = 0.85  # cores used over free cores: the server is short of CPU

DOWNSTREAM = re.compile(
    r"/http/client\.py:|/(urllib3|requests|httpx|httpcore|redis|grpc|psycopg2?|pymysql|pymongo|botocore|"
    r"aiohttp/client\w*|elasticsearch|kafka)/|/socket\.py:(create_connection|getaddrinfo)")
LOGGING = re.compile(r"/logging/(__init__|handlers)\.py:")


def downstream_wait(ctx: AnalysisContext) -> list[Verdict]:
    fix = Fix("take the downstream call off the request path: batch its round trips (MGET, pipelines, one "
              "bulk request), cache what it returns, or make it concurrent with the model",
              "values = redis.mget(keys)            # one round trip, not one per key\n"
              "features = cache.get(user) or fetch(user)   # or: asyncio.gather(fetch(), infer())")
    return _verdicts(ctx, DOWNSTREAM, "waiting on downstream calls (HTTP, Redis, databases)", fix,
                     "a batched or cached downstream call takes")


def blocking_io(ctx: AnalysisContext) -> list[Verdict]:
    fix = Fix("log one short line per request, asynchronously (logging.handlers.QueueHandler + QueueListener); "
              "never format arrays or whole payloads into a record on the request path",
              "queue = Queue(-1)\nlogging.getLogger().addHandler(QueueHandler(queue))\n"
              "QueueListener(queue, FileHandler('app.log')).start()\n"
              "log.info('classified %s in %.1f ms', request_id, ms)   # not repr(tensor)")
    return _verdicts(ctx, LOGGING, "in logging (formatting and writing records)", fix,
                     "one short line per request, written by a queue handler, takes")


def _verdicts(ctx: AnalysisContext, frames: re.Pattern, what: str, fix: Fix, cut_words: str) -> list[Verdict]:
    requests, samples = ctx.requests, ctx.samples
    if requests is None or requests.total_ns <= 0 or samples.empty:
        return []
    start, end = ctx.serving_window
    samples = samples[(samples["ts_ns"] < end) & (samples["ts_ns"] + samples["dur_ns"] > start)]
    mine = samples[under(samples, ctx.stacks, frames)]
    if mine.empty:
        return []
    waiting = mine["attributed"].isin(WAIT_LABELS).to_numpy(bool)
    total_ns, busy_ns = clipped_ns(mine, start, end), clipped_ns(mine[~waiting], start, end)
    window = max(end - start, 1)
    # requests' time in the window: in flight on average x the window (Little's law)
    latency_share = min(total_ns / (requests.in_flight_mean * window), 1.0) if requests.in_flight_mean else 0.0
    free = max(ctx.cores - (ctx.other_cores_used or 0.0), 0.5)
    short_of_cpu = ctx.cores_used is not None and ctx.cores_used >= CPU_SHORT * free
    busy_share = min(busy_ns / (float(ctx.busy_samples["dur_ns"].sum()) or 1.0), 1.0)
    gil_share = _gil_share(ctx, frames)
    bound = gil_share if gil_share is not None else busy_share
    if max(latency_share, bound) < MIN_SHARE:
        return []
    evidence = {"request_time_share": round(latency_share, 3), "waiting_part": round(1 - busy_ns / total_ns, 3),
                "threads_there_mean": round(total_ns / window, 2), "in_flight_mean": round(requests.in_flight_mean, 2),
                "cores_used": round(ctx.cores_used, 2) if ctx.cores_used else None, "where": ctx.frame_labels.where(mine, 3, with_caller=True)}
    title = f"{percent(latency_share)} of request time is spent {what}"
    assumptions = [f"{cut_words} {CUT:.0%} of that time off each request (assumed)"]
    if short_of_cpu or gil_share is not None or bound >= latency_share:  # work, not waiting: judged as work
        if gil_share is not None:
            evidence["gil_held_there"] = round(gil_share, 3)
            assumptions.append(f"the GIL bounds the server (held in {ctx.gil.held_share:.0%} of snapshots; this work "
                               f"holds it {gil_share:.0%} of the time): the interpreter time it holds is freed")
        else:
            assumptions.append(f"this is work more than waiting ({busy_share:.0%} of busy thread time): the "
                               "capacity it burns is freed")
        evidence["busy_share"] = round(busy_share, 3)
        title = f"{percent(max(latency_share, bound))} of the server's " + \
            ("GIL time" if gil_share is not None else "work") + f" is spent {what}"
        return [Verdict(title, CUT * bound, evidence, fix, [EventRef("pyspy", start_ns=start, end_ns=end)],
                        "amdahl", assumptions)]
    speedup = 1.0 / (1.0 - CUT * latency_share)
    if ctx.cores_used:
        cap = free / ctx.cores_used
        if cap < speedup:
            assumptions.append(f"until the CPU runs out: {ctx.cores_used:.2f} of {free:.1f} free cores used today")
            speedup = max(cap, 1.0)
    assumptions.append("clients send the next request when the answer comes (closed loop): throughput rises as "
                       "latency falls")
    return [Verdict(title, 1.0 - 1.0 / speedup, evidence, fix, [EventRef("pyspy", start_ns=start, end_ns=end)],
                    "latency model", assumptions, of_latency=True)]


def _gil_share(ctx: AnalysisContext, frames: re.Pattern) -> float | None:
    """When the GIL bounds the server: the share of snapshots in which a thread in these frames
    holds it; None otherwise."""
    gil = ctx.gil
    if gil is None or gil.held_share < ctx.GIL_BOUND:
        return None
    start, end = ctx.serving_window
    snapshots = ctx.gil_snapshots
    snapshots = snapshots[(snapshots["ts_ns"] >= start) & (snapshots["ts_ns"] < end)]
    holding = snapshots[snapshots["name"] == "holds-gil"]
    there = holding[under(holding, ctx.stacks, frames)]
    return there["ts_ns"].nunique() / max(snapshots["ts_ns"].nunique(), 1)


DOWNSTREAM_WAIT = Rule("downstream-wait", downstream_wait)
BLOCKING_IO = Rule("blocking-io", blocking_io)
