"""The first screen: what is slow, why, what to do and what it buys — the findings ranked
by the share of time they explain. Enter opens a finding's evidence, fix and events."""

from __future__ import annotations

from rich.console import Group
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, OptionList, Static
from textual.widgets.option_list import Option

from profiler.analysis.model import EventRef, Finding, Report
from tui.format import SEVERITY_STYLE, gain_long, gain_short, ns, pct


class FindingsView(Vertical):
    BINDINGS = [Binding("enter", "open", "evidence & fix", show=True)]

    def __init__(self) -> None:
        super().__init__()
        self.findings: list[Finding] = []

    def compose(self) -> ComposeResult:
        yield Static("diagnosing…", id="banner")
        table = DataTable(id="findings-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("#", "severity", "explains", "gain", "finding")
        yield table
        yield Static("", id="finding-preview")

    def show_report(self, report: Report) -> None:
        self.findings = list(report.findings)
        table = self.query_one(DataTable)
        table.clear()
        for rank, finding in enumerate(self.findings, 1):
            table.add_row(str(rank), Text(finding.severity, style=SEVERITY_STYLE[finding.severity]),
                          pct(finding.share), gain_short(finding.estimated_gain),
                          Text(f"{finding.rule}: {finding.title}"), key=str(rank - 1))
        self.query_one("#banner", Static).update(_banner(report))
        if self.findings:
            table.move_cursor(row=0)
            self._preview(0)
        else:
            self.query_one("#finding-preview", Static).update("")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._preview(int(event.row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.open(int(event.row_key.value))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if self.findings:
            self.open(table.cursor_row)

    def open(self, index: int) -> None:
        self.app.push_screen(FindingScreen(self.findings[index], index + 1))

    def _preview(self, index: int) -> None:
        finding = self.findings[index]
        lines = Text()
        lines.append(f"#{index + 1} {finding.title}\n", style="bold")
        lines.append("fix: ", style="bold")
        lines.append(finding.fix.summary + "\n")
        lines.append("gain: ", style="bold")
        lines.append(gain_long(finding.estimated_gain) + "\n")
        lines.append("evidence: ", style="bold")
        lines.append(", ".join(f"{k} {_value(v)}" for k, v in list(finding.evidence.items())[:6]), style="dim")
        lines.append("\nEnter: full evidence, the fix snippet, and the events behind it", style="italic dim")
        self.query_one("#finding-preview", Static).update(lines)


def _banner(report: Report) -> Text:
    if not report.findings:
        return Text("No bottleneck found: no rule saw one in the measured evidence. "
                    "Hotspots (2) and the timeline (4) show where the time went.", style="green")
    top = report.findings[0]
    text = Text()
    text.append(" bottleneck ", style=SEVERITY_STYLE[top.severity])
    text.append(f" {top.title}\n", style="bold")
    text.append(" fix ", style="bold black on green")
    text.append(f" {top.fix.summary}")
    if top.estimated_gain:
        text.append(f"  → {gain_long(top.estimated_gain)}", style="green")
    return text


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_value, value[:4])) + ("…" if len(value) > 4 else "")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in list(value.items())[:4]) + "}"
    return str(value)


def describe_ref(ref: EventRef) -> str:
    what = ", ".join(ref.stages + ref.names) or "all events"
    window = (f" ({ns(ref.end_ns - ref.start_ns)} window)" if ref.start_ns is not None
              and ref.end_ns is not None else " (whole session)")
    return f"{ref.source}: {what}{window}"


class FindingScreen(Screen):
    """One finding in full: evidence, fix snippet, assumptions, and the events to jump to."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("t", "jump('timeline')", "timeline"),
        Binding("h", "jump('hotspots')", "hotspots"),
        Binding("s", "jump('stacks')", "stacks"),
        Binding("question_mark", "app.help", "help"),
    ]

    def __init__(self, finding: Finding, rank: int) -> None:
        super().__init__()
        self.finding = finding
        self.rank = rank

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="finding-body"):
            yield Static(self._body())
        refs = self.finding.events or [EventRef(source="stages")]
        yield Static("events behind it — Enter: timeline · h: hotspots · s: stacks", id="events-title")
        yield OptionList(*[Option(describe_ref(ref), id=str(i)) for i, ref in enumerate(refs)], id="finding-events")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def _body(self) -> Group:
        f = self.finding
        head = Text()
        head.append(f" {f.severity} ", style=SEVERITY_STYLE[f.severity])
        head.append(f"  #{self.rank} {f.rule}\n", style="bold")
        head.append(f.title + "\n", style="bold")
        head.append(f"explains {pct(f.share)} of the time · gain {gain_long(f.estimated_gain)}")
        evidence = Table(title="evidence (measured)", title_justify="left", show_header=False, box=None,
                         padding=(0, 1))
        for key, value in f.evidence.items():
            evidence.add_row(Text(str(key), style="cyan"), _value(value))
        parts: list = [head, Text(""), evidence, Text(""), Text("fix: " + f.fix.summary, style="bold green")]
        if f.fix.snippet:
            parts.append(Syntax(f.fix.snippet, "python", theme="ansi_dark", background_color="default",
                                word_wrap=True))
        if f.fix.knob:
            parts.append(Text("sample server flags: " + " ".join(f"{k} {v}" for k, v in f.fix.knob.items()),
                              style="cyan"))
        if f.estimated_gain and f.estimated_gain.assumptions:
            parts.append(Text("assumes: " + "; ".join(f.estimated_gain.assumptions), style="dim italic"))
        return Group(*parts)

    def _ref(self) -> EventRef:
        refs = self.finding.events or [EventRef(source="stages")]
        index = self.query_one(OptionList).highlighted or 0
        return refs[index]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_jump("timeline")

    def action_jump(self, where: str) -> None:
        ref = self._ref()
        self.app.pop_screen()
        self.app.jump_to_events(ref, where)
