"""The one-screen summary printed after ``prof run`` / ``prof attach``: what was collected,
throughput and latency (as the load generator saw them), stage shares, and the functions
py-spy saw most. Figures only; the diagnosis is ``prof report``'s."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from profiler.session import Session
from profiler.wire_stats import WireStats, wire_stats


@dataclass
class Summary:
    events: dict[str, int]
    probes: dict[str, dict]
    requests: int = 0
    ok: int = 0
    throughput_rps: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    stages: list[tuple[str, float, float, int]] = field(default_factory=list)  # stage, share, p50 ms, count
    functions: list[tuple[str, float]] = field(default_factory=list)  # leaf function, share of samples
    notes: list[str] = field(default_factory=list)
    wire: WireStats | None = None


def summarize(session: Session) -> Summary:
    tl = session.timeline
    counts = tl["source"].value_counts()
    summary = Summary({str(k): int(v) for k, v in counts.items() if v}, dict(session.meta.get("probes", {})),
                      notes=list(session.meta.get("notes", [])))
    client = tl[tl["source"] == "loadgen"]
    if len(client):
        measured = client[~client["args"].str.contains('"warmup":true', regex=False).fillna(False)]
        ok = measured[measured["args"].str.contains('"status":200', regex=False).fillna(False)]
        summary.requests, summary.ok = len(measured), len(ok)
        if len(ok):
            span_s = (int((measured["ts_ns"] + measured["dur_ns"]).max()) - int(measured["ts_ns"].min())) / 1e9
            summary.throughput_rps = len(ok) / span_s if span_s > 0 else None
            latency = ok["dur_ns"].to_numpy() / 1e6
            summary.latency_ms = {f"p{q}": float(np.percentile(latency, q)) for q in (50, 95, 99)}
    spans = tl[(tl["source"] == "stages") & (tl["kind"] == "span") & tl["stage"].notna()]
    spans = spans[spans["stage"] != "model_load"]
    if len(spans):
        grouped = spans.groupby("stage", observed=True)["dur_ns"]
        total = grouped.sum()
        overall = float(total.sum()) or 1.0
        medians = grouped.median()
        sizes = grouped.size()
        summary.stages = sorted(((str(s), float(total[s]) / overall, float(medians[s]) / 1e6, int(sizes[s]))
                                 for s in total.index), key=lambda row: -row[1])
    summary.wire = wire_stats(tl)
    samples = tl[(tl["source"] == "pyspy") & (tl["kind"] == "sample")]
    if len(samples):
        by_function = samples.groupby("name", observed=True)["dur_ns"].sum().sort_values(ascending=False)
        whole = float(by_function.sum()) or 1.0
        summary.functions = [(str(name), float(v) / whole) for name, v in by_function.head(8).items()]
    return summary


def print_summary(summary: Summary, console: Console, session_path: object) -> None:
    probes = Table(title="probes", show_edge=False, title_justify="left")
    probes.add_column("probe")
    probes.add_column("state")
    probes.add_column("events", justify="right")
    source_of = {"framework": ("ort", "torch")}
    for name, info in summary.probes.items():
        sources = source_of.get(name, (name,))
        n = sum(summary.events.get(s, 0) for s in sources)
        state = info.get("status", "?") if info.get("status") == "on" else f"off: {info.get('reason', '')}"
        probes.add_row(name, state, f"{n:,}" if info.get("status") == "on" else "")
    console.print(probes)
    if summary.requests:
        rps = f"{summary.throughput_rps:.1f} req/s" if summary.throughput_rps else "n/a"
        lat = " / ".join(f"{summary.latency_ms[k]:.1f}" for k in ("p50", "p95", "p99")) if summary.latency_ms else "n/a"
        console.print(f"[bold]load[/bold]  {summary.ok}/{summary.requests} ok · {rps} · latency p50/p95/p99 {lat} ms")
    if summary.wire is not None:
        console.print(wire_line(summary.wire), highlight=False)
    if summary.stages:
        table = Table(title="stage time (server spans)", show_edge=False, title_justify="left")
        for column, justify in (("stage", "left"), ("share", "right"), ("p50 ms", "right"), ("spans", "right")):
            table.add_column(column, justify=justify)
        for stage, share, p50, count in summary.stages:
            table.add_row(stage, f"{share:6.1%}", f"{p50:.2f}", f"{count:,}")
        console.print(table)
    if summary.functions:
        table = Table(title="py-spy: where the server's threads were (leaf function, share of samples)",
                      show_edge=False, title_justify="left")
        table.add_column("function")
        table.add_column("share", justify="right")
        for name, share in summary.functions:
            table.add_row(name, f"{share:6.1%}")
        console.print(table)
    for note in summary.notes[-5:]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"session: [bold]{session_path}[/bold]")
    console.print(f"next: [bold]prof report {session_path}[/bold] for every finding with its evidence · "
                  f"prof tui {session_path} to explore · prof export {session_path} --chrome trace.json for "
                  "Perfetto", highlight=False)


def wire_line(wire: WireStats) -> str:
    """The wire's figures in one line: rate, concurrency, latency, sizes, repeats, statuses."""
    latency = " / ".join(f"{wire.latency_ms[k]:.1f}" for k in ("p50", "p95", "p99")) if wire.latency_ms else "n/a"
    statuses = ", ".join(f"{code}×{n}" for code, n in sorted(wire.statuses.items()))
    repeats = f" · {wire.duplicate_fraction:.0%} repeated bodies" if wire.duplicate_fraction is not None else ""
    size = wire.request_bytes.get("p50", 0) / 1024
    return (f"[bold]wire[/bold]  {wire.requests} requests · {wire.arrival_rps:.1f} req/s · in flight "
            f"{wire.in_flight_mean:.1f} mean / {wire.in_flight_max} max · p50/p95/p99 {latency} ms · body p50 "
            f"{size:.0f} KiB{repeats} · {statuses or 'no answers'}")


def stage_table(session: Session) -> pd.DataFrame:
    """Per-stage totals of a session (for ``prof diff``): count, mean and p50 ms."""
    tl = session.timeline
    spans = tl[(tl["source"] == "stages") & (tl["kind"] == "span") & tl["stage"].notna()]
    spans = spans[spans["stage"] != "model_load"]
    grouped = spans.groupby("stage", observed=True)["dur_ns"]
    return pd.DataFrame({"count": grouped.size(), "mean_ms": grouped.mean() / 1e6,
                         "p50_ms": grouped.median() / 1e6})
