"""What every rule needs, computed once per session: the requests as measured end to end,
the time each stage took (from the server's own stage spans, or from py-spy stacks
attributed to stages for a server we did not write), the wire figures, and the load
figures that turn a share of time into an estimated gain.

Rules read this; they never read a server's configuration to judge. ``server_knobs`` is
there only so a fix for the sample server can be worded as the flag to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiler.analysis.attribution import IDLE, SEND, as_stage
from profiler.analysis.model import Gain
from profiler.timeline import StackTable
from profiler.wire_stats import WireStats, wire_requests, wire_stats

SERVICE_EXCLUDED = ("queue",)  # waiting is not work (start-up model loading is left out of the spans)


@dataclass
class Requests:
    """End-to-end requests as the most faithful source saw them."""

    source: str  # loadgen (the client), http (the wire) or stages (the server's own spans)
    count: int
    window_s: float
    total_ns: float
    latency_ms: np.ndarray
    start_ns: int = 0
    end_ns: int = 0

    @property
    def throughput_rps(self) -> float:
        return self.count / self.window_s if self.window_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if len(self.latency_ms) else float("nan")


@dataclass
class AnalysisContext:
    timeline: pd.DataFrame
    stacks: StackTable
    meta: dict[str, Any]
    attribute: Callable[[pd.DataFrame, StackTable], pd.Series] | None = None
    calibration_loader: Callable[[], Any] | None = None
    notes: list[str] = field(default_factory=list)

    # -- sources -------------------------------------------------------------------------

    _of: dict[tuple[str, str | None], pd.DataFrame] = field(default_factory=dict, init=False, repr=False)

    def of(self, source: str, kind: str | None = None) -> pd.DataFrame:
        """The events of one source (and kind), filtered once per context: rules share them
        (copy-on-write: a rule that changes its frame changes its own copy)."""
        key = (source, kind)
        if key not in self._of:
            tl = self.timeline
            mask = tl["source"] == source
            if kind is not None:
                mask &= tl["kind"] == kind
            self._of[key] = tl[mask]
        return self._of[key]

    @cached_property
    def ort_nodes(self) -> pd.DataFrame:
        """ONNX Runtime's per-node spans (args cat "Node"), without session and model-run spans."""
        ort = self.of("ort", "span")
        return ort[arg_field(ort, "cat") == "Node"] if len(ort) else ort

    @cached_property
    def ort_node_ops(self) -> pd.Series:
        """The op type of each of :attr:`ort_nodes` (NA where the profile names none)."""
        return arg_field(self.ort_nodes, "op")

    def kineto_category(self, category: str) -> pd.DataFrame:
        """The torch profiler's spans of one kineto category (cpu_op, kernel, gpu_memcpy, …)."""
        torch = self.of("torch", "span")
        return torch[self._kineto_categories == category] if len(torch) else torch

    @cached_property
    def _kineto_categories(self) -> pd.Series:
        return arg_field(self.of("torch", "span"), "cat")

    @cached_property
    def server_knobs(self) -> list[str]:
        return list((self.meta.get("server") or {}).get("knobs") or [])

    @cached_property
    def wire(self) -> WireStats | None:
        return wire_stats(self.timeline)

    @cached_property
    def wire_requests(self) -> pd.DataFrame:
        return wire_requests(self.timeline)

    @cached_property
    def requests(self) -> Requests | None:
        client = self.of("loadgen", "span")
        if len(client):
            args = client["args"].fillna("{}")
            measured = client[~args.str.contains('"warmup":true', regex=False)]
            ok = measured[measured["args"].str.contains('"status":200', regex=False).fillna(False)]
            if len(ok):
                return _requests("loadgen", ok["ts_ns"].to_numpy(), ok["dur_ns"].to_numpy())
        wire = self.wire_requests
        if len(wire):
            answered = wire[wire["status"].notna()]
            if len(answered):
                return _requests("http", answered["start_ns"].to_numpy(),
                                 (answered["end_ns"] - answered["start_ns"]).to_numpy())
        spans = self._served_spans
        if len(spans) and spans["request_id"].notna().any():
            grouped = spans.groupby("request_id", observed=True)
            start, end = grouped["ts_ns"].min(), (spans["ts_ns"] + spans["dur_ns"]).groupby(
                spans["request_id"], observed=True).max()
            return _requests("stages", start.to_numpy(), (end - start).to_numpy())
        return None

    # -- stages --------------------------------------------------------------------------

    @cached_property
    def stage_spans(self) -> pd.DataFrame:
        """The server's stage spans of the measured requests' window (a load generator's
        warm-up is not measured, so its spans are left out too)."""
        spans, requests = self._served_spans, self.requests
        if requests is None or requests.source == "stages" or not len(spans):
            return spans
        return spans[(spans["ts_ns"] >= requests.start_ns) & (spans["ts_ns"] <= requests.end_ns)]

    @cached_property
    def _served_spans(self) -> pd.DataFrame:
        """The server's stage spans, without the model loading done before the first request
        (start-up is not serving; loads during serving stay)."""
        spans = self.of("stages", "span")
        stage, ts = spans["stage"], spans["ts_ns"].to_numpy()
        keep = stage.notna().to_numpy().copy()  # pandas may hand out a read-only view
        serving = keep & (stage != "model_load").to_numpy()
        if serving.any():
            keep &= serving | (ts >= ts[serving].min())
        spans = spans[keep]  # one copy of the rows (each filter of a million rows copies every column)
        return spans

    @cached_property
    def samples(self) -> pd.DataFrame:
        """py-spy samples with an ``attributed`` stage column (idle, a stage, or other)."""
        samples = self.of("pyspy", "sample").copy()
        if self.attribute is not None and len(samples):
            samples["attributed"] = self.attribute(samples, self.stacks).astype(str).to_numpy()
        else:
            samples["attributed"] = "other"
        return samples

    @cached_property
    def gil_snapshots(self) -> pd.DataFrame:
        """GIL snapshots (py-spy dumps a few times a second): a row per thread and snapshot,
        ``name`` its state (holds-gil, active, inactive), ``attributed`` its stack's stage."""
        snapshots = self.of("pyspy", "instant").copy()
        if self.attribute is not None and len(snapshots):
            labels = self.attribute(snapshots, self.stacks).astype(str)  # an attribution of samples only: none
            snapshots["attributed"] = labels.reindex(snapshots.index, fill_value="other").to_numpy()
        else:
            snapshots["attributed"] = "other"
        return snapshots

    @cached_property
    def stage_basis(self) -> str:
        return "stage spans" if len(self.stage_spans) else "py-spy attribution" if len(self.samples) else "none"

    @cached_property
    def stage_ns(self) -> pd.Series:
        """Total time per stage: stage spans where the server records them, else the py-spy
        time attributed to each stage (idle excluded)."""
        if self.stage_basis == "stage spans":
            return self.stage_spans.groupby("stage", observed=True)["dur_ns"].sum().astype(float)
        if self.stage_basis == "py-spy attribution":
            busy = self.samples[self.samples["attributed"] != IDLE]
            stages = busy["attributed"].map(as_stage)  # send is part of serialize
            return busy["dur_ns"].groupby(stages.to_numpy()).sum().astype(float)
        return pd.Series(dtype=float)

    @cached_property
    def send_ns(self) -> float:
        """The part of serialize spent writing the response out (status line, headers, socket
        writes), as stacks show it; 0 where the server's own spans are the basis (they do not
        split serialize)."""
        if self.stage_basis != "py-spy attribution":
            return 0.0
        return float(self.samples.loc[self.samples["attributed"] == SEND, "dur_ns"].sum())

    @cached_property
    def service_ns(self) -> float:
        """Per-request work summed over requests: every stage but waiting."""
        return float(self.stage_ns.drop(list(SERVICE_EXCLUDED), errors="ignore").sum())

    def service_share(self, *stages: str) -> float:
        """The fraction of the server's work spent in these stages."""
        if self.service_ns <= 0:
            return 0.0
        return float(self.stage_ns.reindex(list(stages)).fillna(0).sum()) / self.service_ns

    @cached_property
    def saturated(self) -> bool:
        """Requests wait more than they are worked on: latency is queueing, so a fix that
        raises capacity shortens latency in proportion (Little's law)."""
        if self.stage_basis == "stage spans":
            queue = float(self.stage_ns.get("queue", 0.0))
            return queue > 0.3 * max(float(self.stage_ns.sum()), 1.0)
        wire = self.wire
        return bool(wire is not None and wire.in_flight_mean >= 2.0)

    @cached_property
    def calibration(self) -> Any:
        if self.calibration_loader is None:
            return None
        try:
            return self.calibration_loader()
        except Exception as exc:  # a gain without its factor is still worth reporting
            self.notes.append(f"calibration unavailable ({type(exc).__name__}: {exc}); gains use shares only")
            return None

    # -- gains ---------------------------------------------------------------------------

    def e2e_share(self, fraction_removed: float) -> float:
        """The share of end-to-end request time that removing ``fraction_removed`` of the
        server's work takes away: all of it when requests queue for that work, else only
        the work itself."""
        requests = self.requests
        if self.saturated or requests is None or requests.total_ns <= 0:
            return fraction_removed
        return min(fraction_removed * self.service_ns / requests.total_ns, 1.0)

    def amdahl(self, fraction_removed: float, assumptions: list[str], method: str = "amdahl") -> Gain:
        """Gain from removing ``fraction_removed`` of the server's per-request work."""
        fraction_removed = min(max(fraction_removed, 0.0), 0.95)
        speedup = 1.0 / (1.0 - fraction_removed)
        requests = self.requests
        before = requests.throughput_rps if requests else None
        p50 = requests.percentile(50) if requests else None
        if p50 is not None and self.saturated:
            p50_after = p50 / speedup
            assumptions = [*assumptions, "the server is saturated (requests queue): latency falls with capacity"]
        elif p50 is not None and requests is not None and requests.count:
            saved_ms = fraction_removed * self.service_ns / requests.count / 1e6
            p50_after = max(p50 - saved_ms, 0.0)
        else:
            p50_after = None
        return Gain(throughput_x=round(speedup, 3), method=method, throughput_rps_before=before,
                    throughput_rps_after=before * speedup if before else None, p50_ms_before=p50,
                    p50_ms_after=p50_after, assumptions=assumptions)


def _requests(source: str, starts: np.ndarray, durations: np.ndarray) -> Requests:
    starts = np.asarray(starts, dtype=np.int64)
    durations = np.asarray(durations, dtype=np.int64)
    if not len(starts):
        return Requests(source, 0, 0.0, 0.0, durations / 1e6)
    first, last = int(starts.min()), int((starts + durations).max())
    return Requests(source, len(starts), (last - first) / 1e9, float(durations.sum()), durations / 1e6, first, last)


def arg_field(frame: pd.DataFrame, key: str, pattern: str = '"([^"]*)"') -> pd.Series:
    """One field of the compact JSON args (a string by default; ``pattern`` captures another
    form, such as ``(\\d+)``), missing as NA, by Arrow's regex kernel over the whole column:
    no JSON parse, no Python string per row (pandas' ``str.extract`` took 0.75 s on 800k rows)."""
    head = pattern.index("(")
    regex = f'"{re.escape(key)}":{pattern[:head]}(?P<v>{pattern[head + 1:]}'
    args = pa.array(frame["args"].array, type=pa.large_string()) if len(frame) else pa.array([], pa.large_string())
    found = pc.struct_field(pc.extract_regex(args, pattern=regex), "v")  # null where no match
    return pd.Series(pd.arrays.ArrowStringArray(found), index=frame.index, name=key)
