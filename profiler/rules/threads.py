"""``thread-oversubscription``: native thread pools (ONNX Runtime's or torch's intra-op pool,
OpenMP, MKL) give the process more runnable threads than there are cores, so they preempt each
other, spin and thrash caches. On a 2-core host an oversubscribed PyTorch slows by an order of
magnitude; pin intra-op threads explicitly.

Evidence, for every OS thread of the process — Python or not — from ``/proc/PID/task/*/
schedstat`` and psutil: its CPU and its run delay (runnable, waiting for a core). Threads at
work (≥ 2 % CPU) want CPU + delay between them; oversubscribed when that is ≥ 1.5× the cores
other processes leave free and a fifth or more of it is waiting. Python threads py-spy saw at
work are told from the rest: with no native thread at work, many busy Python threads are a
saturated server (more load than CPU), not a pool to pin.

Gain. With the model timed on this host at one thread (the calibration of the server's own
model): the CPU a request costs today (cores used / throughput) less its inference share, plus
the calibrated single-thread inference, is what a request costs pinned; throughput then
reaches the free cores over that cost. Without a calibration: removed = 1.5 × wait², fitted on
two oversubscribed sample-server configurations (the rules' in-sample scenarios, not the
corpus: 23 % wait → ×1.09, 52 % → ×1.63) — an assumption from two points, said in the finding.

Constants: the thresholds below were set before the scenario corpus was run, not fitted on it.
"""

from __future__ import annotations

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import calibrated_on, int8_factor, per_request_ms, runs_int8_by_time
from profiler.rules.contract import Rule, Verdict

ACTIVE_PERCENT = 2.0  # a thread at work
OVERSUBSCRIBED = 1.5  # CPU wanted (CPU + run delay) per free core
MIN_WAIT_SHARE = 0.20  # of the CPU wanted, waiting for a core
WAIT_LOSS = 1.5  # without a calibration: removed = WAIT_LOSS x wait^2 (fitted in-sample, not on the corpus)
MAX_REMOVED_UNCALIBRATED = 0.5
# Native threads must want at least half a core between them: a pool that burns real CPU (fitted on
# the development half: a FastAPI and a gunicorn server with no pool read as oversubscribed when
# native threads were counted as "threads at work less Python threads busy").
MIN_NATIVE_CORES = 0.5


def check(ctx: AnalysisContext) -> list[Verdict]:
    ticks = ctx.thread_ticks()
    if ticks.empty:
        return []
    cores = ctx.cores
    # per psutil tick: threads at work then, and the CPU they wanted (CPU + run delay); averaged over
    # the ticks, so a thread per connection that lived a moment counts for the moment it lived
    at_work = ticks[ticks["cpu_percent"] >= ACTIVE_PERCENT]
    per_tick = at_work.groupby("ts_ns")
    n_ticks = max(ticks["ts_ns"].nunique(), 1)
    active_mean = float(per_tick.size().sum()) / n_ticks
    wanted = float((at_work["cpu_percent"] + at_work["wait_percent"]).sum()) / 100.0 / n_ticks
    waiting = float(at_work["wait_percent"].sum()) / 100.0 / n_ticks / wanted if wanted > 0 else 0.0
    others = ctx.other_cores_used or 0.0
    free = ctx.free_cores
    known = ctx.python_os_tids
    python = native = native_wanted = None
    if known:  # the GIL snapshots name the Python threads' OS ids: the rest are native pools
        is_native = ~at_work["tid"].isin(list(known)).to_numpy(bool)
        native = float(is_native.sum()) / n_ticks
        python = active_mean - native
        native_wanted = float((at_work["cpu_percent"] + at_work["wait_percent"])[is_native].sum()) / 100.0 / n_ticks
    if active_mean <= cores or wanted < OVERSUBSCRIBED * free or waiting < MIN_WAIT_SHARE:
        return []
    if native is not None and (native < 1.0 or native_wanted < MIN_NATIVE_CORES):
        return []  # Python threads alone: a saturated server, no pool to pin
    active = at_work.groupby("tid")["cpu_percent"].sum() / n_ticks
    evidence = {"threads_at_work": round(active_mean, 1), "python_threads_at_work": round(python, 1) if python is not None
                else None, "native_threads_at_work": round(native, 1) if native is not None else None,
                "cores": cores, "cores_wanted": round(wanted, 2), "waiting_share": round(waiting, 3),
                "other_processes_cores": round(others, 2),
                "busy_thread_cpu_percent": {int(t): round(float(v), 1) for t, v in active.nlargest(8).items()}}
    removed, method, assumptions = _pinned_gain(ctx, free, evidence)
    if removed is None:
        removed = min(MAX_REMOVED_UNCALIBRATED, WAIT_LOSS * waiting * waiting)
        method, assumptions = "amdahl", [
            f"threads at work wait for a core {waiting:.0%} of the time they want one; pinning removes "
            f"{WAIT_LOSS:g} x wait^2 of the work (fitted on two sample-server configurations, the rules' own "
            "in-sample scenarios: x1.09 at 23% wait, x1.63 at 52%)"]
    if others >= 0.3:
        assumptions.append(f"other processes used {others:.1f} of the {cores} cores meanwhile: only the rest is free")
    fix = Fix(f"pin thread pools to the cores: intra-op threads x concurrent callers <= {cores}",
              "torch.set_num_threads(1); os.environ['OMP_NUM_THREADS'] = '1'   # before importing numpy/torch\n"
              "options.intra_op_num_threads = 1   # onnxruntime.SessionOptions", {"--intra-op-threads": "1"})
    who = f" ({native:.1f} native, {python:.1f} Python)" if native is not None else ""
    title = (f"{active_mean:.1f} threads at work at once{who} want {wanted:.1f} cores of {cores}: runnable but waiting "
             f"for one {waiting:.0%} of the time")
    return [Verdict(title, removed, evidence, fix, [EventRef("proc", names=["thread_cpu_percent",
                                                                           "thread_wait_percent"])],
                    method, assumptions)]


def _pinned_gain(ctx: AnalysisContext, free: float, evidence: dict) -> tuple[float | None, str, list[str]]:
    """Throughput pinned, from the calibrated single-thread inference time and today's CPU per
    request; (None, …) without the figures it needs."""
    calibration, requests = ctx.calibration, ctx.requests
    measured = per_request_ms(ctx, "inference")
    if calibration is None or calibration.threads != 1 or requests is None or not requests.throughput_rps \
            or not ctx.cores_used or not measured:
        return None, "", []
    single = calibration.per_image_ms(1)
    if runs_int8_by_time(ctx, calibration, measured) and int8_factor(calibration, 1):
        single /= int8_factor(calibration, 1)
    cpu_now = ctx.cores_used * 1000.0 / requests.throughput_rps  # ms of CPU per request today
    share = ctx.service_share("inference")
    cpu_after = cpu_now * (1.0 - share) + min(single, cpu_now * share)
    parallel = min(free, max(requests.in_flight_mean, 1.0))
    after_rps = parallel * 1000.0 / cpu_after
    speedup = max(after_rps / requests.throughput_rps, 1.0)
    evidence.update(cpu_ms_per_request=round(cpu_now, 2), calibrated_single_thread_ms=round(single, 2),
                    inference_ms_per_request=round(measured, 2))
    return 1.0 - 1.0 / speedup, "calibrated", [
        f"a request costs {cpu_now:.1f} ms of CPU today; pinned, its inference costs the single-thread "
        f"{single:.1f} ms ({calibrated_on(ctx, calibration)}) instead of {cpu_now * share:.1f} ms",
        f"{parallel:.1f} cores kept busy afterwards (free cores, requests in flight)"]


RULE = Rule("thread-oversubscription", check)
