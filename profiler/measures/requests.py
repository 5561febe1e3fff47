"""Requests, the one definition: latency percentiles, throughput and requests in flight, from
the most faithful source a session has — the load generator (the client saw the whole round
trip), else the wire (the ``http`` probe: first request byte to last response byte), else the
server's own stage spans (first span start to last span end of each request id).

Throughput is answered requests over the measured window (first measured start to last
measured end); latency percentiles are over answered requests; in flight is Little's law on
the window (total latency / window). ``prof load``, ``prof verify``, the run summary, the report,
``prof diff`` and the viewer all take these figures from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler.measures.wire import wire_requests

SOURCES = ("loadgen", "http", "stages")  # best first
PERCENTILES = (50, 95, 99)


@dataclass
class RequestFigures:
    """What one source saw of the measured requests."""

    source: str  # loadgen, http or stages
    count: int  # answered (status 200 for the client; any answer on the wire)
    attempted: int  # measured requests, answered or not
    window_s: float
    total_ns: float  # latency summed over answered requests
    latency_ms: np.ndarray
    start_ns: int = 0
    end_ns: int = 0

    @property
    def throughput_rps(self) -> float:
        return self.count / self.window_s if self.window_s > 0 else 0.0

    @property
    def in_flight_mean(self) -> float:
        """Requests in flight on average over the window (Little's law)."""
        return self.total_ns / (self.window_s * 1e9) if self.window_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if len(self.latency_ms) else float("nan")

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The figures as the report, the summary and ``prof diff`` show them."""
        figures: dict[str, float | int | str | None] = {
            "source": self.source, "requests": self.attempted, "ok": self.count,
            "throughput_rps": round(self.throughput_rps, 2), "window_s": round(self.window_s, 2),
            "in_flight_mean": round(self.in_flight_mean, 2)}
        for q in PERCENTILES:
            value = self.percentile(q)
            figures[f"p{q}_ms"] = None if np.isnan(value) else round(value, 2)
        return figures


def request_figures(source: str, starts_ns: np.ndarray, durations_ns: np.ndarray,
                    answered: np.ndarray | None = None) -> RequestFigures:
    """The figures of measured requests given their starts, durations and which were answered
    (all, when ``answered`` is None). The window runs from the first start to the last end of
    every measured request, answered or not."""
    starts = np.asarray(starts_ns, dtype=np.int64)
    durations = np.asarray(durations_ns, dtype=np.int64)
    ok = np.ones(len(starts), dtype=bool) if answered is None else np.asarray(answered, dtype=bool)
    if not len(starts):
        return RequestFigures(source, 0, 0, 0.0, 0.0, np.zeros(0))
    first, last = int(starts.min()), int((starts + durations).max())
    return RequestFigures(source, int(ok.sum()), len(starts), (last - first) / 1e9, float(durations[ok].sum()),
                          durations[ok] / 1e6, first, last)


def client_requests(timeline: pd.DataFrame) -> pd.DataFrame:
    """The load generator's measured requests (warm-up left out): request_id, start_ns,
    end_ns, answered."""
    client = timeline[(timeline["source"] == "loadgen") & (timeline["kind"] == "span")]
    args = client["args"].fillna("{}")
    measured = client[~args.str.contains('"warmup":true', regex=False).to_numpy(bool)]
    answered = measured["args"].fillna("").str.contains('"status":200', regex=False).to_numpy(bool)
    return pd.DataFrame({"request_id": measured["request_id"].astype(object).to_numpy(),
                         "start_ns": measured["ts_ns"].to_numpy(),
                         "end_ns": (measured["ts_ns"] + measured["dur_ns"]).to_numpy(), "answered": answered})


def span_requests(spans: pd.DataFrame) -> pd.DataFrame:
    """Requests as the server's stage spans bound them: request_id, start_ns, end_ns, answered."""
    spans = spans[spans["request_id"].notna()]
    if spans.empty:
        return pd.DataFrame(columns=["request_id", "start_ns", "end_ns", "answered"])
    ids = spans["request_id"].astype(object).to_numpy()
    ends = (spans["ts_ns"] + spans["dur_ns"]).to_numpy()
    grouped = pd.DataFrame({"request_id": ids, "start_ns": spans["ts_ns"].to_numpy(), "end_ns": ends}).groupby(
        "request_id", sort=False)
    table = pd.DataFrame({"start_ns": grouped["start_ns"].min(), "end_ns": grouped["end_ns"].max()})
    table["answered"] = True
    return table.reset_index()


def request_table(timeline: pd.DataFrame, served_spans: pd.DataFrame,
                  sources: tuple[str, ...] = SOURCES) -> tuple[str, pd.DataFrame] | None:
    """(source, one row per measured request: request_id, start_ns, end_ns, latency_ms,
    answered) from the best of ``sources`` that has any, or None."""
    client = client_requests(timeline) if "loadgen" in sources else timeline.iloc[:0]
    if len(client) and client["answered"].any():
        return "loadgen", _with_latency(client)
    wire = wire_requests(timeline) if "http" in sources else timeline.iloc[:0]
    if len(wire):
        answered = (wire["status"].notna() & (wire["outcome"] != "incomplete")).to_numpy(bool)
        if answered.any():
            table = pd.DataFrame({"request_id": wire["request_id"].to_numpy(), "start_ns": wire["start_ns"].to_numpy(),
                                  "end_ns": wire["end_ns"].to_numpy(), "answered": answered})
            return "http", _with_latency(table)
    spans = span_requests(served_spans) if "stages" in sources else served_spans.iloc[:0]
    if len(spans):
        return "stages", _with_latency(spans)
    return None


def _with_latency(table: pd.DataFrame) -> pd.DataFrame:
    table = table.reset_index(drop=True)
    table["latency_ms"] = (table["end_ns"] - table["start_ns"]).to_numpy() / 1e6
    return table


def figures_of(source: str, table: pd.DataFrame) -> RequestFigures:
    """:func:`request_figures` of a :func:`request_table`."""
    starts = table["start_ns"].to_numpy(np.int64)
    return request_figures(source, starts, table["end_ns"].to_numpy(np.int64) - starts,
                           table["answered"].to_numpy(bool))
