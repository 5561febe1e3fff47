"""``cache-opportunity``: identical request bodies come back and are computed again.

Evidence: the share of request bodies whose SHA-256 repeats an earlier one in the window,
seen on the wire (or in the load generator's records), and that repeats still cost the
server its full work (no cache answering them: their latency is that of first sightings).
SageMaker Debugger-style threshold: worth a finding from 10 % repeats. Below half as many
distinct bodies as requests the finding says the load looks unrepresentative, and the report
names the bottleneck of the work a cache cannot remove ("after the cache")."""

from __future__ import annotations

import numpy as np

from profiler.analysis.context import AnalysisContext
from profiler.analysis.model import EventRef, Fix
from profiler.rules.common import percent
from profiler.rules.contract import Rule, Verdict

MIN_REPEATS = 0.10
# Fewer distinct bodies than this fraction of the requests: a load test replaying a handful of
# files, not traffic (real users rarely send byte-identical images half of the time).
REPRESENTATIVE_DISTINCT = 0.5
SNIPPET = """key = hashlib.sha256(body).hexdigest()
if (hit := cache.get(key)) is not None:
    return hit
result = classify(body)
cache.set(key, result)"""


def check(ctx: AnalysisContext) -> list[Verdict]:
    wire = ctx.wire_requests
    if wire.empty or wire["request_bytes"].fillna(0).max() <= 0:
        return []
    with_body = wire[(wire["request_bytes"].fillna(0) > 0) & wire["status"].eq(200)].sort_values("start_ns")
    if len(with_body) < 20:
        return []
    repeat = with_body["body_sha256"].duplicated(keep="first").to_numpy()
    fraction = float(repeat.mean())
    if fraction < MIN_REPEATS:
        return []
    latency = (with_body["end_ns"] - with_body["start_ns"]).to_numpy() / 1e6
    first_ms, repeat_ms = float(np.median(latency[~repeat])), float(np.median(latency[repeat]))
    if repeat_ms < 0.5 * first_ms:
        return []  # repeats are already answered much faster: something caches them
    served = 1.0 - ctx.service_share("receive", "deserialize", "serialize")
    removed = fraction * served
    distinct = int(with_body["body_sha256"].nunique())
    fix = Fix("cache results by a hash of the request body (in process, or Redis shared by workers)", SNIPPET,
              {"--cache": "lru"})
    unrepresentative = distinct / len(with_body) < REPRESENTATIVE_DISTINCT
    evidence = {"repeated_fraction": round(fraction, 3), "bodies": len(with_body), "distinct_bodies": distinct,
                "p50_ms_first_sighting": round(first_ms, 1), "p50_ms_repeats": round(repeat_ms, 1),
                "load_looks_unrepresentative": unrepresentative}
    title = f"{percent(fraction)} of request bodies are exact repeats, each computed again"
    assumptions = [f"{percent(fraction)} of bodies repeat within the window and would be answered from the cache",
                   "a cache lookup costs next to nothing beside inference"]
    if unrepresentative:
        title += f" — {distinct} distinct bodies in {len(with_body)} requests: the load looks unrepresentative"
        assumptions.append(f"real traffic repeats this much (a load test replaying {distinct} files rarely does): "
                           "the findings after this one rank the work a cache cannot remove")
    return [Verdict(title, removed, evidence, fix, [EventRef("http")], assumptions=assumptions)]


RULE = Rule("cache-opportunity", check)
