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
from tui.lanes import Lane, build_lanes

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
            stacks: StackTable, requests: pd.DataFrame | None = None) -> TuiData:
    """All view data of a loaded session. The figures are the report's (hotspots, the stage
    each py-spy stack was attributed to, thread names); ``requests`` is the measures layer's
    table of measured requests (request_id, latency_ms, ...), latency by the best source."""
    data = TuiData(report=report, session_name=session_name, meta=meta, events=events, stacks=stacks)
    if events.empty:
        return data
    data.start_ns = int(events["ts_ns"].min())
    data.end_ns = int((events["ts_ns"] + events["dur_ns"]).max())
    data.hotspots = hotspot_frame(report)
    samples = events[events["kind"] == "sample"]
    labels = sample_labels(samples, report.sample_stages) if report.sample_stages else None
    data.lanes = build_lanes(events, labels, report.thread_names)
    data.requests = request_index(events, requests)
    if len(samples) and stacks is not None and len(stacks.parents):
        data.calltree = CallTree(stacks, samples["stack_id"].to_numpy(), samples["ts_ns"].to_numpy(), labels)
    return data


def sample_labels(samples: pd.DataFrame, stages_of_stack: dict[int, str]) -> np.ndarray:
    """Each sample's stage as the report attributed its stack."""
    ids = samples["stack_id"].to_numpy()
    distinct, inverse = np.unique(ids, return_inverse=True)
    names = np.asarray([stages_of_stack.get(int(i), "other") for i in distinct], dtype=object)
    return names[inverse]


def hotspot_frame(report: Report) -> pd.DataFrame:
    """The report's hotspots as a table the view sorts and filters."""
    rows = [(h.source, h.kind, h.name, h.total_ms, h.self_ms, h.share, h.count, h.basis, h.location)
            for h in report.hotspots]
    table = pd.DataFrame(rows, columns=[*HOTSPOT_COLUMNS, "basis", "location"])
    table["self_ms"] = table["self_ms"].astype(float)
    return table.sort_values("total_ms", ascending=False, kind="stable").reset_index(drop=True)


def request_index(events: pd.DataFrame, measured: pd.DataFrame | None = None) -> RequestIndex | None:
    """Requests that have spans, with their end-to-end latency as the measures layer defines
    it (``measured``: request_id, latency_ms), else the extent of their spans."""
    spans = events[(events["kind"] == "span") & events["request_id"].notna()]
    if spans.empty:
        return None
    spans = spans[["ts_ns", "dur_ns", "source", "name", "stage", "request_id", "batch_id", "pid", "tid"]].copy()
    spans["request_id"] = spans["request_id"].astype(str)
    spans["end_ns"] = spans["ts_ns"] + spans["dur_ns"]
    by_request = spans.groupby("request_id", sort=False)
    table = pd.DataFrame({"start_ns": by_request["ts_ns"].min(), "end_ns": by_request["end_ns"].max(),
                          "spans": by_request.size()})
    table["latency_ms"] = (table["end_ns"] - table["start_ns"]) / 1e6
    if measured is not None and len(measured):
        latency = pd.Series(measured["latency_ms"].to_numpy(), index=measured["request_id"].astype(str).to_numpy())
        latency = latency[~latency.index.duplicated()].reindex(table.index)
        table["latency_ms"] = latency.fillna(table["latency_ms"])
    stages = spans[spans["source"] == "stages"]
    batch = stages[stages["batch_id"] >= 0].groupby("request_id", sort=False)["batch_id"].first()
    table["batch_id"] = batch.reindex(table.index).fillna(-1).astype(np.int64)
    work = stages[stages["name"] != "queue"]
    slowest = work.sort_values("dur_ns").groupby("request_id", sort=False)["name"].last().astype(str)
    table["slowest_stage"] = slowest.reindex(table.index).fillna("")
    table = table.reset_index(names="request_id").sort_values("latency_ms", ascending=False, kind="stable")
    ordered = spans.sort_values(["request_id", "ts_ns"], kind="stable").reset_index(drop=True)
    return RequestIndex(table=table.reset_index(drop=True), spans=ordered)
