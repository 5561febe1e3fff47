"""One ranked table of hotspots across every source: stage spans, py-spy functions (self and
inclusive), ORT nodes and op types, torch ops and GPU kernels, and counters' saturation.
Each row's share is of end-to-end request time where requests were measured, else of the
session's wall time, so rows of different sources can be read side by side."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pandas as pd

from profiler.analysis.context import IDLE, AnalysisContext
from profiler.analysis.model import Hotspot, StageRow


def basis(ctx: AnalysisContext) -> tuple[str, float]:
    """(what shares are fractions of, its total in ns)."""
    if ctx.requests is not None and ctx.requests.total_ns > 0:
        return f"end-to-end request time ({ctx.requests.source})", ctx.requests.total_ns
    tl = ctx.timeline
    wall = float((tl["ts_ns"] + tl["dur_ns"]).max() - tl["ts_ns"].min()) if len(tl) else 0.0
    return "wall time", max(wall, 1.0)


def stage_rows(ctx: AnalysisContext) -> list[StageRow]:
    _, total = basis(ctx)
    if ctx.stage_basis == "stage spans":
        grouped = ctx.stage_spans.groupby("stage", observed=True)["dur_ns"]
        quantiles = {q: grouped.quantile(q / 100) for q in (50, 95, 99)}
        sums, counts = grouped.sum(), grouped.size()
        rows = [StageRow(str(s), float(sums[s]) / total, float(sums[s]) / 1e6,
                         *(float(quantiles[q][s]) / 1e6 for q in (50, 95, 99)), int(counts[s]), "stage spans")
                for s in sums.index]
    else:
        rows = [StageRow(str(s), float(v) / total, float(v) / 1e6, None, None, None, 0, ctx.stage_basis)
                for s, v in ctx.stage_ns.items()]
    return sorted(rows, key=lambda r: -r.share)


def hotspots(ctx: AnalysisContext, limit: int = 40) -> list[Hotspot]:
    _, total = basis(ctx)
    rows: list[Hotspot] = []
    for row in stage_rows(ctx):
        rows.append(Hotspot("stages" if row.basis == "stage spans" else "pyspy", "stage", row.stage, row.total_ms,
                            row.share, row.count, detail=row.basis))
    rows += _pyspy_rows(ctx, total)
    rows += _span_rows(ctx, total)
    rows += _counter_rows(ctx)
    rows.sort(key=lambda h: -h.share)
    return rows[:limit]


def _pyspy_rows(ctx: AnalysisContext, total: float, top: int = 12) -> list[Hotspot]:
    samples = ctx.samples
    busy = samples[samples["attributed"] != IDLE]
    if busy.empty:
        return []
    per_stack = busy.groupby("stack_id")["dur_ns"].sum()
    self_ns: dict[str, float] = defaultdict(float)
    inclusive_ns: dict[str, float] = defaultdict(float)
    plumbing: set[str] = set()
    for stack_id, ns in per_stack.items():
        frames = ctx.stacks.frames_of(int(stack_id))
        if not frames:
            continue
        self_ns[_label(frames[-1])] += float(ns)
        for frame in frames:
            if _PLUMBING.search(frame[1]):
                plumbing.add(_label(frame))
        for label in {_label(f) for f in frames}:
            inclusive_ns[label] += float(ns)
    rows = [Hotspot("pyspy", "function-self", name, ns / 1e6, ns / total, self_ms=ns / 1e6,
                    detail=f"inclusive {inclusive_ns[name] / 1e6:.0f} ms")
            for name, ns in sorted(self_ns.items(), key=lambda kv: -kv[1])[:top]]
    rows += [Hotspot("pyspy", "function-total", name, ns / 1e6, ns / total, self_ms=self_ns.get(name, 0.0) / 1e6)
             for name, ns in sorted(((n, v) for n, v in inclusive_ns.items() if n not in plumbing),
                                    key=lambda kv: -kv[1])[:top]
             if ns > self_ns.get(name, 0.0) * 1.05]
    return rows


# Threads, pools and event loops sit under every stack: their inclusive time says nothing.
_PLUMBING = re.compile(r"/(threading|selectors|socketserver|runpy)\.py$|/concurrent/futures/|/asyncio/|"
                       r"/uvicorn/(main|server|_compat)\.py$")


def _label(frame: tuple[str, str, int]) -> str:
    function, path, _ = frame
    return f"{function} ({path.rsplit('/', 1)[-1]})"


def _span_rows(ctx: AnalysisContext, total: float, top: int = 10) -> list[Hotspot]:
    rows: list[Hotspot] = []
    nodes = ctx.ort_nodes
    if len(nodes):
        rows += _grouped(nodes, nodes["name"].astype(str), "ort", "ort-node", total, top)
        rows += _grouped(nodes, ctx.ort_node_ops.fillna("?"), "ort", "ort-op", total, top)
    torch = ctx.of("torch", "span")
    if len(torch):
        ops = ctx.kineto_category("cpu_op")
        kernels = ctx.kineto_category("kernel")
        if len(ops):
            rows += _grouped(ops, ops["name"].astype(str), "torch", "torch-op", total, top)
        if len(kernels):
            rows += _grouped(kernels, kernels["name"].astype(str), "torch", "kernel", total, top)
    return rows


def _grouped(frame: pd.DataFrame, keys: pd.Series, source: str, kind: str, total: float, top: int) -> list[Hotspot]:
    grouped = frame["dur_ns"].groupby(keys.to_numpy())
    sums, counts = grouped.sum().sort_values(ascending=False).head(top), grouped.size()
    return [Hotspot(source, kind, str(name), float(ns) / 1e6, float(ns) / total, int(counts[name]))
            for name, ns in sums.items()]


def _counter_rows(ctx: AnalysisContext) -> list[Hotspot]:
    rows = []
    cores = int((ctx.meta.get("host") or {}).get("cores") or 1)
    cpu = ctx.of("proc", "counter")
    cpu = cpu[cpu["name"] == "cpu_percent"]
    if len(cpu):
        per_tick = cpu.groupby("ts_ns")["value"].sum()
        mean = float(np.nanmean(per_tick.to_numpy()))
        rows.append(Hotspot("proc", "counter", "CPU (target and children)", 0.0, min(mean / (100 * cores), 1.0),
                            len(per_tick), detail=f"{mean:.0f}% of {cores * 100}% (saturation)"))
    gpu = ctx.of("nvml", "counter")
    gpu = gpu[gpu["name"] == "gpu.gpu_util"]
    if len(gpu):
        mean = float(np.nanmean(gpu["value"].to_numpy()))
        rows.append(Hotspot("nvml", "counter", "GPU utilization", 0.0, mean / 100, len(gpu),
                            detail=f"{mean:.0f}% busy"))
    return rows
