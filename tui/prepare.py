"""What the TUI shows, prepared off the UI thread from a finished Report, the timeline and its
stack table: display aggregates only (tables, lanes, trees). The diagnosis itself is the
Report's; nothing here judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from profiler.analysis.model import Report
from profiler.timeline import StackTable
from tui.calltree import CallTree
from tui.format import short_path
from tui.lanes import Lane, build_lanes, sample_step_ns

NESTED_SOURCES = ("ort", "torch")  # spans that are calls within calls: self time means something
HOTSPOT_COLUMNS = ("source", "kind", "name", "total_ms", "self_ms", "share", "count")


@dataclass
class RequestIndex:
    """Requests that carry stage spans, slowest first, and the spans of each."""

    table: pd.DataFrame  # request_id, start_ns, latency_ms, batch_id, spans, slowest_stage
    spans: pd.DataFrame  # every span with a request id (stages, http, loadgen), by request then start

    def waterfall(self, request_id: str) -> pd.DataFrame:
        rows = self.spans[self.spans["request_id"] == request_id]
        return rows.sort_values(["ts_ns", "dur_ns"], ascending=[True, False])

    def batch_of(self, batch_id: int) -> list[str]:
        """The requests that rode in batch ``batch_id``, in order of arrival."""
        if batch_id < 0:
            return []
        rows = self.spans[(self.spans["batch_id"] == batch_id) & (self.spans["source"] == "stages")]
        return list(dict.fromkeys(rows.sort_values("ts_ns")["request_id"]))


@dataclass
class TuiData:
    """Everything the views draw, ready before they draw it."""

    report: Report
    session_name: str
    meta: dict[str, Any] = field(default_factory=dict)
    events: pd.DataFrame | None = None
    stacks: StackTable | None = None
    hotspots: pd.DataFrame | None = None
    lanes: list[Lane] = field(default_factory=list)
    requests: RequestIndex | None = None
    calltree: CallTree | None = None
    start_ns: int = 0
    end_ns: int = 0


def prepare(report: Report, session_name: str, meta: dict[str, Any], events: pd.DataFrame,
            stacks: StackTable, sample_stages: np.ndarray | None = None,
            thread_names: dict[int, str] | None = None) -> TuiData:
    """All view data of a loaded session. ``sample_stages``: the stage each py-spy sample was
    attributed to (in timeline order), from the analysis."""
    data = TuiData(report=report, session_name=session_name, meta=meta, events=events, stacks=stacks)
    if events.empty:
        return data
    data.start_ns = int(events["ts_ns"].min())
    data.end_ns = int((events["ts_ns"] + events["dur_ns"]).max())
    data.hotspots = hotspot_table(events, stacks)
    data.lanes = build_lanes(events, sample_stages, thread_names)
    data.requests = request_index(events)
    samples = events[events["kind"] == "sample"]
    if len(samples) and stacks is not None and len(stacks.parents):
        data.calltree = CallTree(stacks, samples["stack_id"].to_numpy(), samples["ts_ns"].to_numpy(),
                                 None if sample_stages is None else np.asarray(sample_stages, dtype=object))
    return data


def hotspot_table(events: pd.DataFrame, stacks: StackTable | None) -> pd.DataFrame:
    """Every span name and every sampled function, by source: total and self time, share of
    the source's time, count."""
    parts = [_span_hotspots(events[(events["kind"] == "span") & (events["source"] == source)], str(source))
             for source in events.loc[events["kind"] == "span", "source"].unique()]
    samples = events[events["kind"] == "sample"]
    if len(samples) and stacks is not None and len(stacks.parents):
        parts.append(_function_hotspots(samples, stacks))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: [] for c in HOTSPOT_COLUMNS})
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values("total_ms", ascending=False, kind="stable").reset_index(drop=True)


def _span_hotspots(spans: pd.DataFrame, source: str) -> pd.DataFrame:
    if spans.empty:
        return pd.DataFrame()
    codes, labels = pd.factorize(spans["name"], sort=True)  # hashes the categorical's codes: no string sort
    labels = np.asarray(labels.astype(str), dtype=object)
    dur = spans["dur_ns"].to_numpy(dtype=np.float64)
    total = np.bincount(codes, weights=dur, minlength=len(labels))
    count = np.bincount(codes, minlength=len(labels))
    kind = "stage" if source == "stages" else "op" if source in NESTED_SOURCES else "span"
    if source in NESTED_SOURCES:
        own = _self_times(spans)
        self_ns = np.bincount(codes, weights=own, minlength=len(labels))
        basis = self_ns.sum()
    else:
        self_ns = np.full(len(labels), np.nan)
        basis = total.sum()
    share = (self_ns if source in NESTED_SOURCES else total) / basis if basis > 0 else np.zeros(len(labels))
    return pd.DataFrame({"source": source, "kind": kind, "name": labels, "total_ms": total / 1e6,
                         "self_ms": self_ns / 1e6, "share": share, "count": count})


def _self_times(spans: pd.DataFrame) -> np.ndarray:
    """Each span's duration less its direct children's (a child lies wholly inside its parent,
    on the same process and thread). Rows in ``spans`` order."""
    own = spans["dur_ns"].to_numpy(dtype=np.float64).copy()
    frame = pd.DataFrame({"pid": spans["pid"].to_numpy(), "tid": spans["tid"].to_numpy(),
                          "ts": spans["ts_ns"].to_numpy(), "end": (spans["ts_ns"] + spans["dur_ns"]).to_numpy(),
                          "neg_dur": -spans["dur_ns"].to_numpy(), "row": np.arange(len(spans))})
    frame = frame.sort_values(["pid", "tid", "ts", "neg_dur"], kind="stable")
    lane_keys = frame["pid"].to_numpy() * 1_000_003 + frame["tid"].to_numpy()
    starts, ends, rows = frame["ts"].to_numpy(), frame["end"].to_numpy(), frame["row"].to_numpy()
    running_end = np.maximum.accumulate(ends)
    nested = (starts[1:] < running_end[:-1]) & (lane_keys[1:] == lane_keys[:-1])
    if not nested.any():
        return own
    stack: list[int] = []
    lane = None
    for i in range(len(rows)):
        if lane_keys[i] != lane:
            lane, stack = lane_keys[i], []
        while stack and ends[stack[-1]] <= starts[i]:
            stack.pop()
        if stack and ends[i] <= ends[stack[-1]]:
            own[rows[stack[-1]]] -= ends[i] - starts[i]
        stack.append(i)
    return np.maximum(own, 0)


def _function_hotspots(samples: pd.DataFrame, stacks: StackTable) -> pd.DataFrame:
    """py-spy functions: self = samples with the function on top, total = samples with it
    anywhere on the stack (once per sample, however deep the recursion); count = the latter."""
    leaves, counts = np.unique(samples["stack_id"].to_numpy(), return_counts=True)
    keep = leaves >= 0
    leaves, counts = leaves[keep], counts[keep]
    step_ms = sample_step_ns(samples) / 1e6
    key_of_frame, labels = _function_keys(stacks)
    node_frames = np.asarray(stacks.node_frames)
    self_count = np.bincount(key_of_frame[node_frames[leaves]], weights=counts, minlength=len(labels))
    total_count = np.zeros(len(labels))
    for leaf, count in zip(leaves.tolist(), counts.tolist()):
        seen = set()
        node = leaf
        while node >= 0:
            seen.add(int(key_of_frame[node_frames[node]]))
            node = stacks.parents[node]
        total_count[list(seen)] += count
    n = counts.sum()
    used = total_count > 0
    return pd.DataFrame({"source": "pyspy", "kind": "function", "name": np.asarray(labels, dtype=object)[used],
                         "total_ms": total_count[used] * step_ms, "self_ms": self_count[used] * step_ms,
                         "share": self_count[used] / n if n else 0.0, "count": total_count[used].astype(np.int64)})


def _function_keys(stacks: StackTable) -> tuple[np.ndarray, list[str]]:
    """Frame -> function key (name and file: a function's lines count as one)."""
    index: dict[tuple[str, str], int] = {}
    keys = np.empty(len(stacks.functions), dtype=np.int64)
    for i, (function, file) in enumerate(zip(stacks.functions, stacks.files)):
        keys[i] = index.setdefault((function, file), len(index))
    labels = [f"{function} ({short_path(file)})" if file else function for function, file in index]
    return keys, labels


def request_index(events: pd.DataFrame) -> RequestIndex | None:
    """Requests that have spans, with their end-to-end latency (the client's or the wire's
    span when there is one, else the extent of the server's spans)."""
    spans = events[(events["kind"] == "span") & events["request_id"].notna()]
    if spans.empty:
        return None
    spans = spans[["ts_ns", "dur_ns", "source", "name", "stage", "request_id", "batch_id", "pid", "tid"]].copy()
    spans["request_id"] = spans["request_id"].astype(str)
    spans["end_ns"] = spans["ts_ns"] + spans["dur_ns"]
    by_request = spans.groupby("request_id", sort=False)
    table = pd.DataFrame({"start_ns": by_request["ts_ns"].min(), "end_ns": by_request["end_ns"].max(),
                          "spans": by_request.size()})
    outer = spans[spans["source"].isin(["loadgen", "http"])]
    if len(outer):
        preferred = outer.sort_values("source").groupby("request_id", sort=False)["dur_ns"].first()
        table["latency_ms"] = (table["end_ns"] - table["start_ns"]) / 1e6
        table.loc[preferred.index, "latency_ms"] = preferred / 1e6
    else:
        table["latency_ms"] = (table["end_ns"] - table["start_ns"]) / 1e6
    stages = spans[spans["source"] == "stages"]
    batch = stages[stages["batch_id"] >= 0].groupby("request_id", sort=False)["batch_id"].first()
    table["batch_id"] = batch.reindex(table.index).fillna(-1).astype(np.int64)
    work = stages[stages["name"] != "queue"]
    slowest = work.sort_values("dur_ns").groupby("request_id", sort=False)["name"].last().astype(str)
    table["slowest_stage"] = slowest.reindex(table.index).fillna("")
    table = table.reset_index(names="request_id").sort_values("latency_ms", ascending=False, kind="stable")
    ordered = spans.sort_values(["request_id", "ts_ns"], kind="stable").reset_index(drop=True)
    return RequestIndex(table=table.reset_index(drop=True), spans=ordered)
