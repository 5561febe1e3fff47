"""Hotspots, the one definition: per source, what took the time, each row a share of a named
denominator so rows of one source add up:

- py-spy functions — self time (the function on top of the stack) and inclusive time (anywhere
  on it, once per sample), weighted by each sample's stretch of time, as shares of **busy
  thread time** (idle samples are waits, listed in the stage breakdown with where they wait).
  One row per function (name and file); frames that only dispatch (threads, event loops, HTTP
  servers, web frameworks) fold into one line. ``location`` is the line holding most of the
  function's self time.
- ONNX Runtime nodes and op types — shares of **ORT node time**.
- torch ops — self time (a nested op's time is its own, not its parent's), shares of **torch op
  time**; GPU kernels — shares of **GPU kernel time**.
- stages — the work rows of the stage breakdown (shares of busy thread time), so a finding's
  stage can be looked up beside the functions.
- counters — CPU and GPU saturation, as shares of **capacity**.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from profiler.analysis.model import Hotspot, StageRow
from profiler.measures.frames import WRAPPER_LABEL, FrameLabels, short_path

BUSY = "busy thread time"
ORT_TIME = "ORT node time"
TORCH_TIME = "torch op time (self)"
KERNEL_TIME = "GPU kernel time"
CAPACITY = "capacity"
MAX_ROWS = 300  # per source and kind: the viewer filters; nobody reads further
MIN_INCLUSIVE = 0.01  # a function with no self time is listed from 1 % inclusive


def function_rows(busy: pd.DataFrame, labels: FrameLabels) -> list[Hotspot]:
    """py-spy function rows of the busy samples (see the module doc)."""
    total = float(busy["dur_ns"].sum())
    if total <= 0 or busy.empty:
        return []
    per_stack = busy[busy["stack_id"] >= 0].groupby("stack_id").agg(ns=("dur_ns", "sum"), n=("value", "sum"))
    stacks = labels.stacks
    self_ns: dict[int, float] = defaultdict(float)
    inclusive_ns: dict[int, float] = defaultdict(float)
    samples: dict[int, float] = defaultdict(float)
    line_ns: dict[tuple[int, int], float] = defaultdict(float)
    wrapper_ns = wrapper_n = 0.0
    for leaf, ns, n in zip(per_stack.index.to_numpy(), per_stack["ns"].to_numpy(float), per_stack["n"].to_numpy(float)):
        frame = int(labels.node_frames[leaf])
        function = int(labels.function_of_frame[frame])
        if labels.wrapper[function]:
            wrapper_ns += ns
            wrapper_n += n
        else:
            self_ns[function] += ns
            line_ns[(function, stacks.lines[frame])] += ns
        for key in _functions_on_stack(labels, int(leaf)):
            inclusive_ns[key] += ns
            samples[key] += n
    best_line = _hottest_lines(line_ns)
    rows = []
    for key, ns in inclusive_ns.items():
        own = self_ns.get(key, 0.0)
        if labels.wrapper[key] or (own <= 0 and ns / total < MIN_INCLUSIVE):
            continue
        file = labels.functions[key][1]
        line = best_line.get(key, 0)
        rows.append(Hotspot("pyspy", "function", labels.names[key], ns / 1e6, own / total, int(round(samples[key])),
                            own / 1e6, basis=BUSY, total_share=ns / total,
                            location=f"{short_path(file)}:{line}" if line else short_path(file)))
    rows.sort(key=lambda h: (-h.share, -(h.total_share or 0.0)))
    rows = rows[:MAX_ROWS]
    if wrapper_ns > 0:
        rows.append(Hotspot("pyspy", "function", WRAPPER_LABEL, wrapper_ns / 1e6, wrapper_ns / total,
                            int(round(wrapper_n)), wrapper_ns / 1e6, basis=BUSY, total_share=wrapper_ns / total))
        rows.sort(key=lambda h: (-h.share, -(h.total_share or 0.0)))
    return rows


def _functions_on_stack(labels: FrameLabels, leaf: int) -> set[int]:
    """The functions anywhere on the stack ending at ``leaf``, each once (recursion counts once)."""
    seen = set()
    node = leaf
    while node >= 0:
        seen.add(int(labels.function_of_frame[labels.node_frames[node]]))
        node = labels.stacks.parents[node]
    return seen


def _hottest_lines(line_ns: dict[tuple[int, int], float]) -> dict[int, int]:
    """Per function, the line holding most of its self time."""
    best: dict[int, tuple[int, float]] = {}
    for (function, line), ns in line_ns.items():
        if ns > best.get(function, (0, -1.0))[1]:
            best[function] = (line, ns)
    return {function: line for function, (line, _) in best.items()}


def stage_rows(stages: list[StageRow]) -> list[Hotspot]:
    """The work rows of the stage breakdown, as hotspots of their source."""
    return [Hotspot("stages" if s.basis == "stage spans" else "pyspy", "stage", s.stage, s.total_ms, s.share or 0.0,
                    s.count, detail=s.basis, basis=BUSY) for s in stages if s.kind == "work"]


def grouped_rows(durations: np.ndarray, keys: np.ndarray, source: str, kind: str, basis: str,
                 self_ns: np.ndarray | None = None) -> list[Hotspot]:
    """Rows of spans grouped by ``keys``: total time, self time where given (the share is of
    self time then), count, share of the group's whole."""
    if not len(durations):
        return []
    codes, names = pd.factorize(pd.Series(keys, dtype=object).fillna("?"), sort=False)
    totals = np.bincount(codes, weights=durations.astype(np.float64), minlength=len(names))
    counts = np.bincount(codes, minlength=len(names))
    own = np.bincount(codes, weights=self_ns, minlength=len(names)) if self_ns is not None else None
    measured = own if own is not None else totals
    whole = float(measured.sum()) or 1.0
    order = np.argsort(-measured, kind="stable")[:MAX_ROWS]
    return [Hotspot(source, kind, str(names[i]), float(totals[i]) / 1e6, float(measured[i]) / whole, int(counts[i]),
                    float(own[i]) / 1e6 if own is not None else None, basis=basis) for i in order]


def self_times(spans: pd.DataFrame) -> np.ndarray:
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


def counter_rows(cpu_percent: pd.DataFrame, cores: int, gpu_util: pd.DataFrame) -> list[Hotspot]:
    """CPU (the target and its children) and GPU saturation over the session."""
    rows = []
    if len(cpu_percent):
        per_tick = cpu_percent.groupby("ts_ns")["value"].sum()
        mean = float(np.nanmean(per_tick.to_numpy()))
        rows.append(Hotspot("proc", "counter", "CPU (target and children)", 0.0, min(mean / (100 * cores), 1.0),
                            len(per_tick), detail=f"{mean:.0f}% of {cores * 100}%", basis=CAPACITY))
    if len(gpu_util):
        mean = float(np.nanmean(gpu_util["value"].to_numpy()))
        rows.append(Hotspot("nvml", "counter", "GPU utilization", 0.0, mean / 100, len(gpu_util),
                            detail=f"{mean:.0f}% busy", basis=CAPACITY))
    return rows
