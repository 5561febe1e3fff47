"""The diagnosis report as terminal text (rich renderables), Markdown or JSON. Display only:
the figures come finished in the :class:`~profiler.analysis.model.Report`."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from profiler.analysis.model import Finding, Gain, Hotspot, Report

_COLORS = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str)


def gain_text(gain: Gain | None) -> str:
    if gain is None:
        return "gain not estimated"
    parts = [f"x{gain.throughput_x:.2f} throughput"]
    if gain.throughput_rps_before and gain.throughput_rps_after:
        parts[0] += f" ({gain.throughput_rps_before:.1f} -> {gain.throughput_rps_after:.1f} req/s)"
    if gain.p50_ms_before is not None and gain.p50_ms_after is not None:
        parts.append(f"p50 {gain.p50_ms_before:.0f} -> {gain.p50_ms_after:.0f} ms")
    return ", ".join(parts) + f" [{gain.method}]"


def load_text(load: dict) -> str:
    """The requests' figures in one line."""
    latency = "/".join("—" if load.get(f"p{q}_ms") is None else f"{load[f'p{q}_ms']:.1f}" for q in (50, 95, 99))
    return (f"{load['ok']}/{load['requests']} requests answered ({load['source']}) · {load['throughput_rps']} req/s · "
            f"{load['in_flight_mean']} in flight · p50/p95/p99 {latency} ms · stage times from "
            f"{load.get('stage_basis', 'none')}")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _evidence_text(evidence: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in evidence.items())


def render_text(report: Report, limit: int = 8) -> RenderableType:
    parts: list[RenderableType] = [Text(f"prof report · {report.session}", style="bold")]
    if report.load:
        parts.append(Text(load_text(report.load), style="dim"))
    if not report.findings:
        parts.append(Text("no finding: no rule saw a bottleneck in the measured evidence", style="green"))
    for rank, finding in enumerate(report.findings[:limit], 1):
        parts.append(_finding_panel(rank, finding))
    if report.stages:
        parts.append(stage_table(report))
    parts.extend(_hotspot_tables(report))
    for note in report.notes[-6:]:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


def _finding_panel(rank: int, finding: Finding) -> Panel:
    body: list[RenderableType] = [
        Text(f"explains {finding.share:.0%} of request time · {gain_text(finding.estimated_gain)}"),
        Text("evidence: " + _evidence_text(finding.evidence), style="dim"),
        Text("fix: " + finding.fix.summary, style="bold")]
    if finding.fix.snippet:
        body.append(Syntax(finding.fix.snippet, "python", theme="ansi_dark", background_color="default"))
    if finding.fix.knob:
        body.append(Text("sample server: " + " ".join(f"{k} {v}" for k, v in finding.fix.knob.items()), style="cyan"))
    if finding.estimated_gain and finding.estimated_gain.assumptions:
        body.append(Text("assumes: " + "; ".join(finding.estimated_gain.assumptions), style="dim italic"))
    title = f"{rank}. [{_COLORS[finding.severity]}]{finding.severity}[/] {finding.rule}: {finding.title}"
    return Panel(Group(*body), title=title, title_align="left")


def stage_table(report: Report) -> Table:
    basis = report.stages[0].basis if report.stages else "none"
    table = Table(title=f"stages ({basis}) · share of busy thread time (work rows sum to 100 %), time per request, "
                  "threads at once; waits below, not in the shares", title_justify="left", show_edge=False)
    for column in ("stage", "busy share", "ms/request", "threads", "p50 ms", "p99 ms", "count", "where"):
        table.add_column(column, justify="left" if column in ("stage", "where") else "right")
    for row in report.stages:
        table.add_row(row.stage, f"{row.share:.1%}" if row.share is not None else "waiting",
                      *(f"{v:.2f}" if v is not None else "" for v in (row.per_request_ms, row.threads, row.p50_ms,
                                                                     row.p99_ms)),
                      f"{row.count:,}" if row.count else "", "; ".join(row.where[:3]))
    return table


def hotspot_groups(report: Report, limit: int) -> list[tuple[str, list[Hotspot]]]:
    """The report's hotspots by source and kind, each group titled with the denominator of its
    shares, at most ``limit`` rows each (stage rows are the stage table's)."""
    groups: dict[tuple[str, str, str], list[Hotspot]] = {}
    for hotspot in report.hotspots:
        if hotspot.kind != "stage":
            groups.setdefault((hotspot.source, hotspot.kind, hotspot.basis), []).append(hotspot)
    return [(f"{source} {kind}: share of {basis or 'its source'}", rows[:limit])
            for (source, kind, basis), rows in groups.items()]


def _hotspot_tables(report: Report, limit: int = 10) -> list[Table]:
    tables = []
    for title, rows in hotspot_groups(report, limit):
        table = Table(title=title, title_justify="left", show_edge=False)
        for column in ("name", "share", "inclusive", "self ms", "total ms", "count", "where"):
            table.add_column(column, justify="left" if column in ("name", "where") else "right")
        for h in rows:
            table.add_row(h.name[:80], f"{h.share:.1%}", f"{h.total_share:.1%}" if h.total_share is not None else "",
                          f"{h.self_ms:,.1f}" if h.self_ms is not None else "",
                          f"{h.total_ms:,.1f}" if h.total_ms else h.detail, f"{h.count:,}" if h.count else "",
                          h.location)
        tables.append(table)
    return tables


def render_markdown(report: Report) -> str:
    lines = [f"# prof report: `{report.session}`", ""]
    if report.load:
        lines += [load_text(report.load) + ".", ""]
    lines += ["## Findings", ""]
    if not report.findings:
        lines.append("No finding.")
    for rank, finding in enumerate(report.findings, 1):
        lines += [f"### {rank}. `{finding.rule}` ({finding.severity}): {finding.title}", "",
                  f"- explains **{finding.share:.0%}** of request time; estimated gain: {gain_text(finding.estimated_gain)}",
                  f"- evidence: {_evidence_text(finding.evidence)}", f"- fix: {finding.fix.summary}"]
        if finding.fix.knob:
            lines.append("- sample server: `" + " ".join(f"{k} {v}" for k, v in finding.fix.knob.items()) + "`")
        if finding.estimated_gain and finding.estimated_gain.assumptions:
            lines.append("- assumes: " + "; ".join(finding.estimated_gain.assumptions))
        if finding.fix.snippet:
            lines += ["", "```python", finding.fix.snippet, "```"]
        lines.append("")
    lines += ["## Stages", "", "Work rows: share of busy thread time (they sum to 100 %); waits are not in the shares.",
              "", "| stage | busy share | ms/request | threads | p50 ms | p99 ms | where |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.stage} | {f'{r.share:.1%}' if r.share is not None else 'waiting'} | {_fmt(r.per_request_ms)} | "
              f"{_fmt(r.threads)} | {_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} | {'; '.join(r.where[:3])} |"
              for r in report.stages]
    lines += ["", "## Hotspots"]
    for title, rows in hotspot_groups(report, 10):
        lines += ["", f"{title}:", "", "| name | share | inclusive | total ms | where |", "|---|---|---|---|---|"]
        lines += [f"| `{h.name[:80]}` | {h.share:.1%} | {_pct(h.total_share)} | {h.total_ms:,.1f} | {h.location} |"
                  for h in rows]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
