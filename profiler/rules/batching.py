"""``batching-opportunity``: requests arrive concurrently but the model runs them one at a
time, and inference is the largest part of the work.

Evidence: requests in flight (Little's law on the measured requests: total latency over the
window), the batch sizes the server's stage spans record — or, for a server we did not
write, inference time per request against this host's calibrated batch-1 time. The gain
uses the calibrated per-image time at the batch size the concurrency can fill (Triton Model
Analyzer's approach: measure the model at each batch size rather than assume scaling)."""

from __future__ import annotations

import numpy as np

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import batch_sizes, calibrated_on, int8_factor, per_request_ms, percent, runs_int8_by_time
from profiler.rules.contract import Rule, Verdict

MIN_INFERENCE_SHARE = 0.30
MIN_IN_FLIGHT = 2.0
_CHOICES = (16, 8, 4, 2)

SNIPPET = """# gather what is waiting (up to N, or for a few ms) and run one forward
batch = [await queue.get()]
while len(batch) < 8 and (item := await get_with_timeout(queue, 0.005)) is not None:
    batch.append(item)
outputs = session.run(None, {"input": np.stack([b.tensor for b in batch])})"""


def check(ctx: AnalysisContext) -> list[Verdict]:
    requests = ctx.requests
    share = ctx.service_share("inference")
    if requests is None or requests.window_s <= 0 or share < MIN_INFERENCE_SHARE:
        return []
    in_flight = requests.in_flight_mean
    if in_flight < MIN_IN_FLIGHT:
        return []
    sizes = batch_sizes(ctx)
    calibration = ctx.calibration
    if calibration is not None and not calibration.covers(1, *_CHOICES):
        calibration = None  # a model with a fixed batch size: its batch scaling was not measured
    evidence = {"in_flight_mean": round(in_flight, 2), "inference_share": round(share, 3),
                "requests_source": requests.source}
    if len(sizes):
        mean_batch = float(np.mean(sizes))
        evidence["mean_batch_size"] = round(mean_batch, 2)
    elif calibration is not None and per_request_ms(ctx, "inference"):
        measured = per_request_ms(ctx, "inference")
        int8 = runs_int8_by_time(ctx, calibration, measured)
        single = calibration.per_image_ms(1) / (int8_factor(calibration, 1) if int8 else 1.0)
        mean_batch = max(single / measured, 1.0) if measured else 1.0
        evidence.update(inference_ms_per_request=round(measured, 2), calibrated_batch1_ms=round(single, 2),
                        implied_batch_size=round(mean_batch, 2), precision="int8" if int8 else "fp32")
    else:
        return []
    target = next((b for b in _CHOICES if b <= in_flight), 2)
    if mean_batch >= 0.75 * target:
        return []
    method, assumptions = None, []
    removed = share * 0.5
    if calibration is not None:
        base = max(int(round(mean_batch)), 1)
        speedup = calibration.batch_speedup(target) / calibration.batch_speedup(base)
        if evidence.get("precision") == "int8" and int8_factor(calibration, target) and base == 1:
            # INT8 scales with the batch differently: the calibration times it at batch 1 and 8
            speedup *= int8_factor(calibration, target) / int8_factor(calibration, 1)
        removed = share * (1.0 - 1.0 / max(speedup, 1.0))
        evidence.update(target_batch=target, calibrated_speedup_per_image=round(speedup, 2))
        method, assumptions = "calibrated", [
            f"batches of {target} fill at the measured concurrency ({in_flight:.1f} in flight)",
            f"per-image inference {speedup:.2f}x faster at batch {target} ({calibrated_on(ctx, calibration)})",
            "waiting for a batch adds at most the max wait"]
    fix = Fix(f"batch concurrent requests into one forward pass (up to {target}, waiting at most 5 ms)", SNIPPET,
              {"--max-batch": str(target), "--max-wait-ms": "5"})
    return [Verdict(f"{in_flight:.1f} requests in flight but inference runs batches of {mean_batch:.1f}: "
                    f"{percent(share)} of the work could be batched", removed, evidence, fix,
                    [EventRef("stages" if ctx.stage_basis == "stage spans" else "pyspy", stages=["inference"])],
                    method, assumptions)]


RULE = Rule("batching-opportunity", check)

