"""The measures layer: every figure prof shows has its one definition here, computed once per
session from the timeline — requests (:mod:`.requests`), the stage breakdown (:mod:`.stages`),
hotspots (:mod:`.hotspots`), the wire (:mod:`.wire`). The report, the run summary, ``prof diff``,
``prof verify`` and the viewer read these figures; the rules judge them
(:class:`profiler.analysis.context.AnalysisContext` extends :class:`Measures`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiler.analysis.attribution import IDLE, SEND, as_stage
from profiler.analysis.model import Hotspot, StageRow
from profiler.measures import concurrency
from profiler.measures import hotspots as hotspot_rows
from profiler.measures import stages as stage_figures
from profiler.measures.frames import FrameLabels
from profiler.measures.requests import RequestFigures, figures_of, request_table
from profiler.measures.wire import ImagesSeen, WireStats, images_seen, wire_requests, wire_stats
from profiler.timeline import StackTable

Attribute = Callable[[pd.DataFrame, StackTable], pd.Series]


@dataclass
class Figures:
    """What every view shows of a session: the figures of the measures layer, ready to save."""

    load: dict[str, Any]
    stages: list[StageRow]
    hotspots: list[Hotspot]
    wire: dict[str, Any] | None
    stage_basis: str
    sample_stages: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GilFigures:
    snapshots: int
    held_share: float  # of the snapshots, those in which some thread held the GIL
    holders: dict[str, float]  # attribution label -> share of the held snapshots

    def held_by(self, *labels: str) -> float:
        """The share of the GIL-held time these labels hold."""
        return float(sum(self.holders.get(label, 0.0) for label in labels))


@dataclass
class Measures:
    """The figures of one session's timeline, each computed on first use and kept."""

    timeline: pd.DataFrame
    stacks: StackTable
    meta: dict[str, Any]
    attribute: Attribute | None = None

    _of: dict[tuple[str, str | None], pd.DataFrame] = field(default_factory=dict, init=False, repr=False)

    # -- sources -------------------------------------------------------------------------

    def of(self, source: str, kind: str | None = None) -> pd.DataFrame:
        """The events of one source (and kind), filtered once: every consumer shares them
        (copy-on-write: one that changes its frame changes its own copy)."""
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
    def window_ns(self) -> float:
        """The session's wall time: first event start to last event end."""
        tl = self.timeline
        return float((tl["ts_ns"] + tl["dur_ns"]).max() - tl["ts_ns"].min()) if len(tl) else 0.0

    @cached_property
    def cores(self) -> int:
        return int((self.meta.get("host") or {}).get("cores") or 1)

    # -- requests and the wire ------------------------------------------------------------

    @cached_property
    def wire(self) -> WireStats | None:
        return wire_stats(self.timeline)

    @cached_property
    def wire_requests(self) -> pd.DataFrame:
        return wire_requests(self.timeline)

    @cached_property
    def images(self) -> ImagesSeen | None:
        """The images the requests carried (format and pixel size from their headers, the wire
        probe's reading): the median one; None without the wire probe or image bodies."""
        return images_seen(self.wire_requests)

    @cached_property
    def request_table(self) -> tuple[str, pd.DataFrame] | None:
        """(source, a row per measured request) from the best source (:mod:`.requests`)."""
        return request_table(self.timeline, self._served_spans)

    def outer_request_table(self) -> pd.DataFrame | None:
        """The measured requests as the client or the wire saw them (None when neither did):
        what a viewer needs beside the server's own spans, which bound the rest."""
        table = request_table(self.timeline, self._served_spans, sources=("loadgen", "http"))
        return table[1] if table else None

    @cached_property
    def requests(self) -> RequestFigures | None:
        table = self.request_table
        if table is None:
            return None
        figures = figures_of(*table)
        return figures if figures.count else None

    # -- stages --------------------------------------------------------------------------

    @cached_property
    def _served_spans(self) -> pd.DataFrame:
        return stage_figures.served_spans(self.of("stages", "span"))

    @cached_property
    def stage_spans(self) -> pd.DataFrame:
        """The server's stage spans of the measured requests' window (a load generator's
        warm-up is not measured, so its spans are left out too)."""
        spans, requests = self._served_spans, self.requests
        if requests is None or requests.source == "stages" or not len(spans):
            return spans
        return spans[(spans["ts_ns"] >= requests.start_ns) & (spans["ts_ns"] <= requests.end_ns)]

    @cached_property
    def samples(self) -> pd.DataFrame:
        """py-spy samples with an ``attributed`` label (a stage, ``send``, ``idle`` or other)."""
        samples = self.of("pyspy", "sample").copy()
        samples["attributed"] = self._labels(samples)
        return samples

    @cached_property
    def gil_snapshots(self) -> pd.DataFrame:
        """GIL snapshots (py-spy dumps a few times a second): a row per thread and snapshot,
        ``name`` its state (holds-gil, active, inactive), ``attributed`` its stack's stage."""
        snapshots = self.of("pyspy", "instant").copy()
        snapshots["attributed"] = self._labels(snapshots)
        return snapshots

    def _labels(self, rows: pd.DataFrame) -> np.ndarray:
        if self.attribute is None or rows.empty:
            return np.full(len(rows), "other", dtype=object)
        labels = self.attribute(rows, self.stacks).astype(str)  # an attribution of samples only: the rest other
        return labels.reindex(rows.index, fill_value="other").to_numpy()

    @cached_property
    def sample_stages(self) -> dict[int, str]:
        """Each py-spy stack id -> its stage (or idle) as attribution found it, ``send`` shown as
        serialize: what the viewer colours samples by."""
        rows = pd.concat([self.samples[["stack_id", "attributed"]], self.gil_snapshots[["stack_id", "attributed"]]])
        rows = rows[rows["stack_id"] >= 0].drop_duplicates("stack_id")
        return {int(k): as_stage(str(v)) for k, v in zip(rows["stack_id"], rows["attributed"])}

    @cached_property
    def stage_basis(self) -> str:
        return "stage spans" if len(self.stage_spans) else "py-spy attribution" if len(self.samples) else "none"

    @cached_property
    def busy_samples(self) -> pd.DataFrame:
        """py-spy samples of threads at work (not waiting)."""
        samples = self.samples
        return samples[~samples["attributed"].isin(stage_figures.WAIT_LABELS).to_numpy(bool)]

    @cached_property
    def frame_labels(self) -> FrameLabels:
        return FrameLabels(self.stacks)

    @cached_property
    def stages(self) -> list[StageRow]:
        """The stage breakdown (:mod:`.stages`): work rows in shares of busy thread time, then waits."""
        requests = self.requests.count if self.requests else 0
        window = self.requests.window_s * 1e9 if self.requests else self.window_ns
        if self.stage_basis == "stage spans":
            return stage_figures.from_spans(self.stage_spans, requests, window)
        if self.stage_basis == "py-spy attribution":
            return stage_figures.from_samples(self.samples, self.stacks, self.frame_labels, requests, window)
        return []

    @cached_property
    def stage_ns(self) -> pd.Series:
        """Total time per stage on the breakdown's basis: every span stage (queue included), or
        the busy samples' stages (waits excluded)."""
        return pd.Series({row.stage: row.total_ms * 1e6 for row in self.stages
                          if row.kind == "work" or self.stage_basis == "stage spans"}, dtype=float)

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
        """Busy time: the work of every request (or thread) summed — every stage but waiting."""
        return float(sum(row.total_ms * 1e6 for row in self.stages if row.kind == "work"))

    def service_share(self, *stages: str) -> float:
        """The fraction of the server's busy time spent in these stages."""
        if self.service_ns <= 0:
            return 0.0
        return float(self.stage_ns.reindex(list(stages)).fillna(0).sum()) / self.service_ns

    # -- threads at once ---------------------------------------------------------------------

    @cached_property
    def serving_window(self) -> tuple[int, int]:
        """While requests were being served (an attach window often starts and ends idle): the
        wire's requests, else the samples' span, else the session's."""
        requests = self.wire_requests
        if len(requests):
            return int(requests["start_ns"].min()), int(requests["end_ns"].max())
        samples = self.samples
        if len(samples):
            return int(samples["ts_ns"].min()), int((samples["ts_ns"] + samples["dur_ns"]).max())
        tl = self.timeline
        return (int(tl["ts_ns"].min()), int((tl["ts_ns"] + tl["dur_ns"]).max())) if len(tl) else (0, 0)

    @cached_property
    def cores_used(self) -> float | None:
        """Mean CPU of the process (and its children) over the serving window, in cores (psutil)."""
        start, end = self.serving_window
        cpu = self.of("proc", "counter")
        cpu = cpu[(cpu["name"] == "cpu_percent") & (cpu["ts_ns"] >= start) & (cpu["ts_ns"] < end)]
        if cpu.empty:
            return None
        return float(np.nanmean(cpu.groupby("ts_ns")["value"].sum().to_numpy())) / 100.0

    @cached_property
    def other_cores_used(self) -> float | None:
        """Mean CPU the rest of the machine used over the serving window, in cores: the host's
        busy CPU less the target's and less prof's probes' (psutil): a load generator on the same
        host, neighbours — what stays after prof is gone."""
        start, end = self.serving_window
        counters = self.of("proc", "counter")
        window = counters[(counters["ts_ns"] >= start) & (counters["ts_ns"] < end)]
        host = window[window["name"] == "host_cpu_percent"]
        if host.empty or self.cores_used is None:
            return None
        probes = window.loc[window["name"] == "probe_cpu_percent", "value"].to_numpy(float)
        profiling = float(np.nanmean(probes)) / 100.0 if len(probes) else 0.0
        return max(float(np.nanmean(host["value"].to_numpy())) / 100.0 - self.cores_used - profiling, 0.0)

    @cached_property
    def free_cores(self) -> float:
        """The cores the server could use: the machine's less what other processes used over the
        serving window (never below what the server itself used; all of them without counters)."""
        other = self.other_cores_used
        if other is None:
            return float(self.cores)
        return max(self.cores - other, self.cores_used or 0.0, 0.5)

    @cached_property
    def cpu_per_wall(self) -> float:
        """The CPU a busy thread got per second of wall time over the serving window: cores used
        over Python threads at work at once (1 when they fit the cores). Time per request from
        py-spy samples is wall time — a thread sharing a core with three others takes four times
        as long — so a comparison with a calibrated (CPU) time scales by this first."""
        busy = self.overlap(*[label for label in self.samples["attributed"].unique()
                              if label not in stage_figures.WAIT_LABELS]).mean if len(self.samples) else 0.0
        if not self.cores_used or busy <= 0:
            return 1.0
        return min(1.0, self.cores_used / busy)

    @cached_property
    def python_os_tids(self) -> frozenset[int]:
        """OS thread ids of the Python threads (the GIL snapshots name them); every other thread of
        the process is native (a runtime's pool, OpenMP, MKL)."""
        return frozenset(int(t) for t in self.gil_snapshots["tid"].unique() if int(t) >= 0)

    def thread_ticks(self) -> pd.DataFrame:
        """Per psutil tick and OS thread of the target over the serving window: CPU and run-delay
        percent (``ts_ns``, ``tid``, ``cpu_percent``, ``wait_percent``)."""
        start, end = self.serving_window
        counters = self.of("proc", "counter")
        counters = counters[(counters["ts_ns"] >= start) & (counters["ts_ns"] < end)
                            & counters["name"].isin(["thread_cpu_percent", "thread_wait_percent"]).to_numpy(bool)]
        if counters.empty:
            return pd.DataFrame(columns=["ts_ns", "tid", "cpu_percent", "wait_percent"])
        table = counters.pivot_table(index=["ts_ns", "tid"], columns="name", values="value", aggfunc="sum",
                                     observed=True).reset_index()
        table.columns = [str(c) for c in table.columns]
        return table.rename(columns={"thread_cpu_percent": "cpu_percent", "thread_wait_percent": "wait_percent"}) \
            .reindex(columns=["ts_ns", "tid", "cpu_percent", "wait_percent"]).fillna(0.0)

    @cached_property
    def gil(self) -> GilFigures | None:
        """The GIL over the serving window, from the snapshots (``py-spy dump`` a few times a
        second): in what share of them some thread holds it, and which labels hold it (shares of
        the held snapshots); None with fewer than five snapshots."""
        start, end = self.serving_window
        snapshots = self.gil_snapshots
        snapshots = snapshots[(snapshots["ts_ns"] >= start) & (snapshots["ts_ns"] < end)]
        taken = snapshots["ts_ns"].nunique()
        if taken < 5:
            return None
        holding = snapshots[snapshots["name"] == "holds-gil"]
        held = holding["ts_ns"].nunique()
        holders = holding["attributed"].value_counts() / max(held, 1)
        return GilFigures(int(taken), held / taken, {str(k): float(v) for k, v in holders.items() if v > 0})

    @cached_property
    def gc(self) -> tuple[int, float] | None:
        """(native samples, the share of the time some thread was inside the cyclic garbage
        collector) over the serving window, per process watched (:mod:`probes.gc_watch`); None
        when the watch did not run or covered fewer than three samples of the window."""
        return concurrency.collector_share(self.of("pyspy", "span"), *self.serving_window)

    def overlap(self, *labels: str) -> concurrency.Overlap:
        """How many threads carried these attribution labels at once over the serving window."""
        samples = self.samples
        return concurrency.overlap(samples[samples["attributed"].isin(labels).to_numpy(bool)], *self.serving_window)

    @cached_property
    def parked(self) -> list[concurrency.Parked]:
        """Lines of the server's own code where threads wait inside requests, largest first."""
        samples = self.samples
        waits = samples[samples["attributed"].isin(stage_figures.WAIT_LABELS).to_numpy(bool)]
        return concurrency.parked(waits, self.stacks, *self.serving_window)

    # -- hotspots and the whole ------------------------------------------------------------

    @cached_property
    def hotspots(self) -> list[Hotspot]:
        """Every source's hotspots (:mod:`.hotspots`), each source's rows largest first."""
        rows = hotspot_rows.stage_rows(self.stages)
        rows += hotspot_rows.function_rows(self.busy_samples, self.frame_labels) if len(self.busy_samples) else []
        nodes = self.ort_nodes
        if len(nodes):
            durations = nodes["dur_ns"].to_numpy()
            rows += hotspot_rows.grouped_rows(durations, nodes["name"].astype(str).to_numpy(), "ort", "ort-node",
                                              hotspot_rows.ORT_TIME)
            rows += hotspot_rows.grouped_rows(durations, self.ort_node_ops.to_numpy(), "ort", "ort-op",
                                              hotspot_rows.ORT_TIME)
        ops, kernels = self.kineto_category("cpu_op"), self.kineto_category("kernel")
        if len(ops):
            rows += hotspot_rows.grouped_rows(ops["dur_ns"].to_numpy(), ops["name"].astype(str).to_numpy(), "torch",
                                              "torch-op", hotspot_rows.TORCH_TIME, hotspot_rows.self_times(ops))
        if len(kernels):
            rows += hotspot_rows.grouped_rows(kernels["dur_ns"].to_numpy(), kernels["name"].astype(str).to_numpy(),
                                              "torch", "kernel", hotspot_rows.KERNEL_TIME)
        cpu = self.of("proc", "counter")
        gpu = self.of("nvml", "counter")
        rows += hotspot_rows.counter_rows(cpu[cpu["name"] == "cpu_percent"], self.cores,
                                          gpu[gpu["name"] == "gpu.gpu_util"])
        return rows

    def figures(self) -> Figures:
        """Everything the views show, as the report saves it."""
        return Figures(load=self.requests.to_dict() if self.requests else {}, stages=self.stages,
                       hotspots=self.hotspots, wire=asdict(self.wire) if self.wire else None,
                       stage_basis=self.stage_basis, sample_stages=self.sample_stages)


def arg_field(frame: pd.DataFrame, key: str, pattern: str = '"([^"]*)"') -> pd.Series:
    """One field of the compact JSON args (a string by default; ``pattern`` captures another
    form, such as ``(\\d+)``), missing as NA, by Arrow's regex kernel over the whole column:
    no JSON parse, no Python string per row (pandas' ``str.extract`` took 0.75 s on 800k rows)."""
    head = pattern.index("(")
    regex = f'"{re.escape(key)}":{pattern[:head]}(?P<v>{pattern[head + 1:]}'
    args = pa.array(frame["args"].array, type=pa.large_string()) if len(frame) else pa.array([], pa.large_string())
    found = pc.struct_field(pc.extract_regex(args, pattern=regex), "v")  # null where no match
    return pd.Series(pd.arrays.ArrowStringArray(found), index=frame.index, name=key)


__all__ = ["Figures", "Measures", "RequestFigures", "arg_field", "IDLE", "SEND", "as_stage"]
