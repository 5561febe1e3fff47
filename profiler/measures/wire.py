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
                                     "response_bytes", "body_sha256", "ttfb_ns", "content_type", "conn", "outcome",
                                     "image"])
    args = pd.DataFrame([orjson.loads(a) for a in spans["args"].fillna("{}")], index=spans.index)
    for column in ("status", "ttfb_ns", "request_bytes", "response_bytes", "conn"):
        if column not in args:
            args[column] = np.nan
    for column in ("body_sha256", "content_type", "outcome", "image"):
        if column not in args:
            args[column] = None
    frame = pd.DataFrame({"start_ns": spans["ts_ns"].to_numpy(), "end_ns": (spans["ts_ns"] + spans["dur_ns"]).to_numpy(),
                          "request_id": spans["request_id"].astype(object).to_numpy()}, index=spans.index)
    return frame.join(args[["status", "request_bytes", "response_bytes", "body_sha256", "ttfb_ns", "content_type",
                            "conn", "outcome", "image"]])


@dataclass(frozen=True)
class ImagesSeen:
    """The images the requests carried, read from their headers by the wire probe: how many,
    the median width and height, and the most common format."""

    count: int
    width: int
    height: int
    format: str

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def images_seen(requests: pd.DataFrame) -> ImagesSeen | None:
    """The median image of the requests (:func:`wire_requests`) whose bodies carried one."""
    if requests.empty or "image" not in requests:
        return None
    found = [i for i in requests["image"] if isinstance(i, (list, tuple)) and len(i) == 3]
    if not found:
        return None
    pixels = np.array([int(w) * int(h) for _, w, h in found])
    middle = found[int(np.argsort(pixels)[len(pixels) // 2])]
    formats = pd.Series([str(f) for f, _, _ in found]).value_counts()
    return ImagesSeen(len(found), int(middle[1]), int(middle[2]), str(formats.index[0]))


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


def requests_of_samples(timeline: pd.DataFrame, busy: pd.Series | None = None) -> pd.Series:
    """The wire request each py-spy sample served, by time and thread.

    First by time alone: a sample taken while exactly one request was in flight served it.
    Those samples bind their thread to that request's connection when a thread's samples
    agree on one connection (servers with a thread per connection, like ``http.server``'s
    threaded one); the bound thread's other samples then served the request its connection
    had in flight. ``busy`` (a mask over the samples) leaves idle ones out: a thread waiting
    for its next request served nothing. Returns request ids indexed like the samples."""
    samples = timeline[(timeline["source"] == "pyspy") & (timeline["kind"] == "sample")]
    out = pd.Series(pd.NA, index=samples.index, dtype="object")
    requests = wire_requests(timeline)
    if busy is not None:
        samples = samples[busy.reindex(samples.index, fill_value=False).to_numpy(bool)]
    if samples.empty or requests.empty:
        return out
    middles = (samples["ts_ns"] + samples["dur_ns"] // 2).to_numpy(np.int64)
    flight = in_flight_series(requests)
    position = np.searchsorted(flight["ts_ns"].to_numpy(), middles, side="right") - 1
    alone = (position >= 0) & (flight["in_flight"].to_numpy()[np.maximum(position, 0)] == 1)
    tied = np.where(alone, _in_flight_at(requests, middles), None)
    conn_of = dict(zip(requests["request_id"], requests["conn"]))
    for tid, conn in _bound_threads(samples["tid"].to_numpy(), tied, samples["dur_ns"].to_numpy(), conn_of).items():
        mine = (samples["tid"].to_numpy() == tid) & pd.isna(tied)
        on_conn = requests[requests["conn"] == conn]
        tied[mine] = _in_flight_at(on_conn, middles[mine])
    out[samples.index] = tied
    return out


def _in_flight_at(requests: pd.DataFrame, instants: np.ndarray) -> np.ndarray:
    """Per instant, the id of the latest-started request still in flight then (or None)."""
    order = np.argsort(requests["start_ns"].to_numpy(), kind="stable")
    starts = requests["start_ns"].to_numpy()[order]
    ends = requests["end_ns"].to_numpy()[order]
    ids = requests["request_id"].to_numpy()[order]
    candidate = np.searchsorted(starts, instants, side="right") - 1
    found = np.full(len(instants), None, dtype=object)
    ok = candidate >= 0
    ok[ok] &= ends[candidate[ok]] >= instants[ok]
    found[ok] = ids[candidate[ok]]
    return found


def _bound_threads(tids: np.ndarray, tied: np.ndarray, durations: np.ndarray, conn_of: dict,
                   min_ns: int = 20_000_000, agreement: float = 0.8) -> dict[int, object]:
    """Threads whose time-tied samples (at least ``min_ns`` of them; py-spy merges an unchanged
    stack into one long sample) agree on one connection, with that connection."""
    known = ~pd.isna(tied)
    pairs = pd.DataFrame({"tid": tids[known], "conn": [conn_of.get(r) for r in tied[known]],
                          "ns": durations[known]}).dropna()
    bound = {}
    for tid, rows in pairs.groupby("tid"):
        per_conn = rows.groupby("conn")["ns"].sum().sort_values(ascending=False)
        if per_conn.sum() >= min_ns and per_conn.iloc[0] >= agreement * per_conn.sum():
            bound[int(tid)] = per_conn.index[0]
    return bound


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}
