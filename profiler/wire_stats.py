"""Derived figures of the ``http`` source (requests seen on the wire), for the analyzers, the
summary and ``prof report``: arrival rate and requests in flight over time, wire latency
and time-to-first-byte percentiles, request and response sizes, status counts, and the
share of request bodies that repeat an earlier one (what a result cache would have served).

Everything works on the timeline alone, so it holds for servers prof did not write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson
import pandas as pd

SOURCE = "http"


@dataclass
class WireStats:
    requests: int
    answered: int
    window_s: float
    arrival_rps: float
    throughput_rps: float
    in_flight_mean: float
    in_flight_max: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    ttfb_ms: dict[str, float] = field(default_factory=dict)
    request_bytes: dict[str, float] = field(default_factory=dict)
    response_bytes_mean: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: int = 0
    duplicate_fraction: float | None = None
    content_types: dict[str, int] = field(default_factory=dict)


def wire_requests(timeline: pd.DataFrame) -> pd.DataFrame:
    """One row per request on the wire: start/end ns, request id, and the fields of args."""
    spans = timeline[(timeline["source"] == SOURCE) & (timeline["kind"] == "span")]
    if spans.empty:
        return pd.DataFrame(columns=["start_ns", "end_ns", "request_id", "status", "request_bytes",
                                     "response_bytes", "body_sha256", "ttfb_ns", "content_type", "conn", "outcome"])
    args = pd.DataFrame([orjson.loads(a) for a in spans["args"].fillna("{}")], index=spans.index)
    for column in ("status", "ttfb_ns", "request_bytes", "response_bytes", "conn"):
        if column not in args:
            args[column] = np.nan
    for column in ("body_sha256", "content_type", "outcome"):
        if column not in args:
            args[column] = None
    frame = pd.DataFrame({"start_ns": spans["ts_ns"].to_numpy(), "end_ns": (spans["ts_ns"] + spans["dur_ns"]).to_numpy(),
                          "request_id": spans["request_id"].astype(object).to_numpy()}, index=spans.index)
    return frame.join(args[["status", "request_bytes", "response_bytes", "body_sha256", "ttfb_ns", "content_type",
                            "conn", "outcome"]])


def wire_stats(timeline: pd.DataFrame) -> WireStats | None:
    """The figures of the wire requests, or None when the session has none."""
    requests = wire_requests(timeline)
    if requests.empty:
        return None
    answered = requests[requests["status"].notna() & (requests["outcome"] != "incomplete")]
    first, last = int(requests["start_ns"].min()), int(requests["end_ns"].max())
    window_s = max((last - first) / 1e9, 1e-9)
    busy_ns = float((answered["end_ns"] - answered["start_ns"]).sum())
    latency = (answered["end_ns"] - answered["start_ns"]).to_numpy() / 1e6
    ttfb = answered["ttfb_ns"].dropna().to_numpy(dtype=float) / 1e6
    sizes = requests["request_bytes"].fillna(0).to_numpy(dtype=float)
    stats = WireStats(
        requests=len(requests), answered=len(answered), window_s=window_s, arrival_rps=len(requests) / window_s,
        throughput_rps=len(answered) / window_s, in_flight_mean=busy_ns / 1e9 / window_s,
        in_flight_max=int(in_flight_series(requests)["in_flight"].max()),
        latency_ms=_percentiles(latency), ttfb_ms=_percentiles(ttfb),
        request_bytes={**_percentiles(sizes), "max": float(sizes.max()), "mean": float(sizes.mean())},
        response_bytes_mean=float(answered["response_bytes"].fillna(0).mean()) if len(answered) else 0.0,
        statuses={int(k): int(v) for k, v in answered["status"].value_counts().items()},
        content_types={str(k): int(v) for k, v in requests["content_type"].dropna().value_counts().items()})
    stats.bodies, stats.duplicate_fraction = duplicate_bodies(requests)
    return stats


def duplicate_bodies(requests: pd.DataFrame) -> tuple[int, float | None]:
    """(requests with a body, the fraction of those whose body repeats an earlier one)."""
    with_body = requests[requests["request_bytes"].fillna(0) > 0].sort_values("start_ns")
    if with_body.empty:
        return 0, None
    repeats = with_body["body_sha256"].duplicated(keep="first")
    return len(with_body), float(repeats.mean())


def in_flight_series(requests: pd.DataFrame) -> pd.DataFrame:
    """Requests in flight after each arrival or completion: columns ts_ns, in_flight."""
    starts = requests["start_ns"].to_numpy(dtype=np.int64)
    ends = requests["end_ns"].to_numpy(dtype=np.int64)
    ts = np.concatenate([starts, ends])
    step = np.concatenate([np.ones(len(starts), np.int64), -np.ones(len(ends), np.int64)])
    order = np.lexsort((step, ts))  # at one instant, completions before arrivals
    return pd.DataFrame({"ts_ns": ts[order], "in_flight": np.cumsum(step[order])})


def rate_series(requests: pd.DataFrame, bin_ns: int = 1_000_000_000) -> pd.DataFrame:
    """Per time bin: arrivals/s, completions/s and the mean number in flight."""
    if requests.empty:
        return pd.DataFrame(columns=["ts_ns", "arrivals_per_s", "completions_per_s", "in_flight_mean"])
    first = int(requests["start_ns"].min())
    n_bins = int((int(requests["end_ns"].max()) - first) // bin_ns) + 1
    edges = first + np.arange(n_bins + 1, dtype=np.int64) * bin_ns
    arrivals = np.histogram(requests["start_ns"], bins=edges)[0]
    completions = np.histogram(requests["end_ns"], bins=edges)[0]
    starts, ends = requests["start_ns"].to_numpy(np.int64), requests["end_ns"].to_numpy(np.int64)
    # time each request spends inside each bin, summed: the time-weighted mean in flight
    overlap = np.clip(np.minimum(ends[:, None], edges[None, 1:]) - np.maximum(starts[:, None], edges[None, :-1]),
                      0, None) if len(starts) * n_bins <= 5_000_000 else None
    in_flight = overlap.sum(axis=0) / bin_ns if overlap is not None else np.full(n_bins, np.nan)
    scale = 1e9 / bin_ns
    return pd.DataFrame({"ts_ns": edges[:-1], "arrivals_per_s": arrivals * scale,
                         "completions_per_s": completions * scale, "in_flight_mean": in_flight})


def requests_of_samples(timeline: pd.DataFrame) -> pd.Series:
    """The wire request each py-spy sample of the target served, where time makes it
    unambiguous: exactly one request of that process was in flight at the sample's middle.
    Returns request ids indexed like the samples (missing where it cannot be told)."""
    samples = timeline[(timeline["source"] == "pyspy") & (timeline["kind"] == "sample")]
    requests = wire_requests(timeline)
    out = pd.Series(pd.NA, index=samples.index, dtype="object")
    if samples.empty or requests.empty:
        return out
    flight = in_flight_series(requests)
    middles = (samples["ts_ns"] + samples["dur_ns"] // 2).to_numpy(np.int64)
    position = np.searchsorted(flight["ts_ns"].to_numpy(), middles, side="right") - 1
    alone = (position >= 0) & (flight["in_flight"].to_numpy()[np.maximum(position, 0)] == 1)
    order = np.argsort(requests["start_ns"].to_numpy(), kind="stable")
    starts = requests["start_ns"].to_numpy()[order]
    candidate = np.searchsorted(starts, middles, side="right") - 1
    ids = requests["request_id"].to_numpy()[order]
    ends = requests["end_ns"].to_numpy()[order]
    ok = alone & (candidate >= 0)
    ok[ok] &= ends[candidate[ok]] >= middles[ok]
    out[ok] = ids[candidate[ok]]
    return out


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}
