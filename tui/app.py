"""``prof tui``: the findings first, then every layer of the session behind them.

The app is handed a :class:`SessionSource` — it never opens files or runs the analysis
itself. A worker thread asks the source for the report (fast when cached) and then for the
prepared view data; each arrives as a message, so the first screen paints before a large
timeline has finished loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static, TabbedContent, TabPane

from profiler.analysis.model import EventRef, Report
from tui.views.findings import FindingsView
from tui.views.help import HelpScreen
from tui.views.hotspots import HotspotsView
from tui.views.stacks import StacksView
from tui.views.stages import StagesView
from tui.views.timeline import TimelineView

if TYPE_CHECKING:  # pandas is imported by the loading worker, after the first frame
    from tui.prepare import TuiData

VIEWS = ("findings", "hotspots", "stages", "timeline", "stacks")


class SessionSource(Protocol):
    """Where the app's data comes from (the CLI reads a session directory)."""

    name: str

    def report(self) -> Report: ...

    def data(self, report: Report) -> TuiData: ...

    def export(self, start_ns: int, end_ns: int, sources: list[str] | None) -> Path: ...


@dataclass
class Selection:
    """What ``e`` exports: a time window and, optionally, only some sources."""

    start_ns: int
    end_ns: int
    sources: list[str] | None = None


class ProfApp(App):
    CSS_PATH = Path(__file__).with_name("prof.tcss")  # absolute: subclasses may live anywhere
    TITLE = "prof"
    BINDINGS = [
        Binding("1", "view('findings')", "findings"),
        Binding("2", "view('hotspots')", "hotspots"),
        Binding("3", "view('stages')", "stages"),
        Binding("4", "view('timeline')", "timeline"),
        Binding("5", "view('stacks')", "stacks"),
        Binding("e", "export", "export"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]

    class ReportReady(Message):
        def __init__(self, report: Report) -> None:
            super().__init__()
            self.report = report

    class DataReady(Message):
        def __init__(self, data: TuiData) -> None:
            super().__init__()
            self.data = data

    class LoadFailed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self, source: SessionSource) -> None:
        super().__init__()
        self.source = source
        self.report: Report | None = None
        self.data: TuiData | None = None
        self.exports: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Static(f"prof · {self.source.name} · loading the report…", id="title")
        with TabbedContent(initial="findings", id="views"):
            with TabPane("1 Findings", id="findings"):
                yield FindingsView()
            with TabPane("2 Hotspots", id="hotspots"):
                yield HotspotsView()
            with TabPane("3 Stages", id="stages"):
                yield StagesView()
            with TabPane("4 Timeline", id="timeline"):
                yield TimelineView()
            with TabPane("5 Stacks", id="stacks"):
                yield StacksView()
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        try:
            report = self.source.report()
            self.post_message(self.ReportReady(report))
            self.post_message(self.DataReady(self.source.data(report)))
        except Exception as exc:  # shown in the app: a broken session must not leave a blank screen
            self.post_message(self.LoadFailed(f"{type(exc).__name__}: {exc}"))

    def on_prof_app_report_ready(self, message: ReportReady) -> None:
        self.report = message.report
        self.query_one("#title", Static).update(_title(self.source.name, message.report))
        self.query_one(FindingsView).show_report(message.report)
        self.query_one(StagesView).show_report(message.report)
        if self.current_view == "findings":
            self._focus_view("findings")  # Enter right away opens the top finding

    def on_prof_app_data_ready(self, message: DataReady) -> None:
        self.data = message.data
        for view in (self.query_one(HotspotsView), self.query_one(StagesView), self.query_one(TimelineView),
                     self.query_one(StacksView)):
            view.show_data(message.data)

    def on_prof_app_load_failed(self, message: LoadFailed) -> None:
        self.query_one("#title", Static).update(f"prof · {self.source.name} · could not load: {message.error}")
        self.notify(message.error, title="could not load the session", severity="error", timeout=30)

    def on_timeline_view_selection_changed(self, message: TimelineView.SelectionChanged) -> None:
        self.query_one(StacksView).set_window(message.selection)

    # -- navigation ----------------------------------------------------------------------

    def action_view(self, view: str) -> None:
        self.query_one("#views", TabbedContent).active = view
        self.call_after_refresh(self._focus_view, view)

    def _focus_view(self, view: str) -> None:
        pane = self.query_one(f"#{view}", TabPane)
        focusable = [w for w in pane.query("*") if w.can_focus and w.display]
        if focusable:
            focusable[0].focus()

    @property
    def current_view(self) -> str:
        return self.query_one("#views", TabbedContent).active

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def jump_to_events(self, ref: EventRef, where: str = "timeline") -> None:
        """Show the events behind a finding: the timeline at their window with their lanes
        marked, the hotspots filtered to their names, or the stacks of their stage."""
        if where == "hotspots":
            self.query_one(HotspotsView).focus_on(ref)
        elif where == "stacks":
            self.query_one(StacksView).focus_on(ref)
        else:
            self.query_one(TimelineView).focus_on(ref)
        self.action_view(where)

    # -- export ----------------------------------------------------------------------------

    def selection(self) -> Selection | None:
        if self.data is None:
            return None
        timeline = self.query_one(TimelineView)
        start, end = timeline.export_window()
        return Selection(start, end, timeline.highlighted_sources())

    def action_export(self) -> None:
        selection = self.selection()
        if selection is None:
            self.notify("the timeline is still loading", severity="warning")
            return
        self.export_selection(selection)

    @work(thread=True, exclusive=True, group="export")
    def export_selection(self, selection: Selection) -> None:
        try:
            path = self.source.export(selection.start_ns, selection.end_ns, selection.sources)
        except Exception as exc:  # a full disk or a read-only session: say so, keep the app
            self.call_from_thread(self.notify, f"{type(exc).__name__}: {exc}", title="export failed",
                                  severity="error")
            return
        self.exports.append(path)
        self.call_from_thread(self.notify, f"{path} — open it in ui.perfetto.dev", title="Chrome trace written",
                              timeout=10)


def _title(name: str, report: Report) -> str:
    load = report.load
    if not load:
        return f"prof · {name}"
    return (f"prof · {name} · {load['requests']:,} requests · {load['throughput_rps']:.1f} req/s · "
            f"p50 {load['p50_ms']:.0f} ms · p99 {load['p99_ms']:.0f} ms")
