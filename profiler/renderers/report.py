"""The diagnosis report as terminal text (rich renderables), Markdown or JSON. Display only:
the figures come finished in the :class:`~profiler.analysis.model.Report`."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from profiler.analysis.model import Finding, Gain, Report

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


def _evidence_text(evidence: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in evidence.items())


def render_text(report: Report, limit: int = 8) -> RenderableType:
    parts: list[RenderableType] = [Text(f"prof report · {report.session}", style="bold")]
    if report.load:
        load = report.load
        parts.append(Text(f"{load['requests']} requests ({load['source']}) · {load['throughput_rps']} req/s · "
                          f"p50/p95/p99 {load['p50_ms']}/{load['p95_ms']}/{load['p99_ms']} ms · stage times from "
                          f"{load['stage_basis']}", style="dim"))
    if not report.findings:
        parts.append(Text("no finding: no rule saw a bottleneck in the measured evidence", style="green"))
    for rank, finding in enumerate(report.findings[:limit], 1):
        parts.append(_finding_panel(rank, finding))
    parts.append(_stage_table(report))
    parts.append(_hotspot_table(report))
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


def _stage_table(report: Report) -> Table:
    table = Table(title=f"stages (share of {report.basis})", title_justify="left", show_edge=False)
    for column in ("stage", "share", "total ms", "p50 ms", "p95 ms", "p99 ms", "count"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in report.stages:
        table.add_row(row.stage, f"{row.share:.1%}", f"{row.total_ms:,.0f}",
                      *(f"{v:.2f}" if v is not None else "" for v in (row.p50_ms, row.p95_ms, row.p99_ms)),
                      f"{row.count:,}" if row.count else "")
    return table


def _hotspot_table(report: Report, limit: int = 15) -> Table:
    table = Table(title="hotspots across sources", title_justify="left", show_edge=False)
    for column in ("source", "kind", "name", "share", "ms", "count"):
        table.add_column(column, justify="right" if column in ("share", "ms", "count") else "left")
    for hotspot in report.hotspots[:limit]:
        table.add_row(hotspot.source, hotspot.kind, hotspot.name[:70], f"{hotspot.share:.1%}",
                      f"{hotspot.total_ms:,.0f}" if hotspot.total_ms else hotspot.detail,
                      f"{hotspot.count:,}" if hotspot.count else "")
    return table


def render_markdown(report: Report) -> str:
    lines = [f"# prof report: `{report.session}`", ""]
    if report.load:
        load = report.load
        lines += [f"{load['requests']} requests ({load['source']}), {load['throughput_rps']} req/s, p50/p95/p99 "
                  f"{load['p50_ms']}/{load['p95_ms']}/{load['p99_ms']} ms; stage times from {load['stage_basis']}.", ""]
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
    lines += ["## Stages", "", f"Share of {report.basis}.", "", "| stage | share | total ms | p50 ms | p99 ms |",
              "|---|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.share:.1%} | {r.total_ms:,.0f} | {r.p50_ms or ''} | {r.p99_ms or ''} |"
              for r in report.stages]
    lines += ["", "## Hotspots", "", "| source | kind | name | share | ms |", "|---|---|---|---|---|"]
    lines += [f"| {h.source} | {h.kind} | `{h.name[:80]}` | {h.share:.1%} | {h.total_ms:,.0f} |"
              for h in report.hotspots[:25]]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
