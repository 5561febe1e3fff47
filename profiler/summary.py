"""The one-screen summary printed after ``prof run`` / ``prof attach`` / ``prof import``: what was
collected, then the report's own figures — requests as the best source saw them, the wire, the
stage breakdown (shares of busy thread time) and where threads wait, and the functions holding
most of the busy time. Nothing is computed here: the figures are the report's (the measures
layer's), so the summary, ``prof report``, ``prof diff`` and the viewer agree."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from profiler.analysis.model import Report
from profiler.measures.wire import WireStats
from profiler.renderers.report import load_text, stage_table
from probes.registry import sources_of

TOP_FUNCTIONS = 8


def print_summary(report: Report, meta: dict[str, Any], events: dict[str, int], console: Console,
                  session_path: object) -> None:
    """``events``: the timeline's event count per source."""
    probes = Table(title="probes", show_edge=False, title_justify="left")
    for column in ("probe", "state", "events"):
        probes.add_column(column, justify="right" if column == "events" else "left")
    for name, info in (meta.get("probes") or {}).items():
        on = info.get("status") == "on"
        count = sum(events.get(s, 0) for s in sources_of(name))
        probes.add_row(name, "on" if on else f"off: {info.get('reason', '')}", f"{count:,}" if on else "")
    console.print(probes)
    if report.load:
        console.print(f"[bold]requests[/bold]  {load_text(report.load)}", highlight=False)
    if report.wire:
        console.print(wire_line(WireStats(**report.wire)), highlight=False)
    if report.stages:
        console.print(stage_table(report))
    functions = [h for h in report.hotspots if h.source == "pyspy" and h.kind == "function"][:TOP_FUNCTIONS]
    if functions:
        table = Table(title="py-spy: functions holding the busy time (share of busy thread time; idle and waiting "
                      "frames left out)", show_edge=False, title_justify="left")
        for column in ("function", "self", "inclusive", "line"):
            table.add_column(column, justify="right" if column in ("self", "inclusive") else "left")
        for h in functions:
            table.add_row(h.name, f"{h.share:6.1%}", f"{h.total_share or 0:6.1%}", h.location)
        console.print(table)
    for note in list(meta.get("notes") or [])[-5:]:
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
