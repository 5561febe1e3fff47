"""Stage latency distributions (p50/p95/p99 bars) and the waterfall of one request: where its
time went, stage by stage, and which batch it rode in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from profiler.analysis.model import Report
from tui.format import bar, color_of, ms, pct

if TYPE_CHECKING:
    from tui.prepare import RequestIndex, TuiData

MAX_REQUESTS = 1000


class StagesView(Vertical):
    def __init__(self) -> None:
        super().__init__()
        self.requests: RequestIndex | None = None
        self.request_id: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="stage-dist-box"):
            yield Static("diagnosing…", id="stage-dist")
        with Horizontal(id="stage-lower"):
            table = DataTable(id="requests-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("request", "latency", "slowest")
            yield table
            with VerticalScroll(id="waterfall-box"):
                yield Static("loading the timeline…", id="waterfall")

    def show_report(self, report: Report) -> None:
        self.query_one("#stage-dist", Static).update(distribution(report))

    def show_data(self, data: TuiData) -> None:
        self.requests = data.requests
        table = self.query_one(DataTable)
        table.clear()
        if data.requests is None:
            self.query_one("#waterfall", Static).update("no request ids in this session's spans: "
                                                        "nothing to draw a waterfall of")
            return
        rows = data.requests.table.head(MAX_REQUESTS)
        table.add_rows([(Text(r.request_id), ms(r.latency_ms), r.slowest_stage) for r in rows.itertuples()])
        table.border_title = f"requests, slowest first ({len(data.requests.table):,})"
        if len(rows):
            self.show_request(str(rows.iloc[0]["request_id"]))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.requests is None or event.cursor_row < 0 or event.cursor_row >= len(self.requests.table):
            return
        self.show_request(str(self.requests.table.iloc[event.cursor_row]["request_id"]))

    def show_request(self, request_id: str) -> None:
        if self.requests is None:
            return
        self.request_id = request_id
        box = self.query_one("#waterfall-box")
        width = max(box.size.width - 2 - 13 - 10, 10)
        self.query_one("#waterfall", Static).update(waterfall(self.requests, request_id, width))

    def on_resize(self) -> None:
        if self.request_id is not None:
            self.call_after_refresh(self.show_request, self.request_id)


def distribution(report: Report) -> Table | Text:
    rows = [r for r in report.stages if r.count]
    if not rows:
        return Text("no stage times in this session (no stage spans and no py-spy samples to attribute)")
    top = max((r.p99_ms or r.p95_ms or r.p50_ms or 0.0) for r in rows) or 1.0
    table = Table(title="stage latency per request · busy share: of busy thread time (work sums to 100 %; waits "
                  "have none)", title_justify="left", box=None, padding=(0, 1), expand=True)
    table.add_column("stage")
    table.add_column("busy share", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("p99", justify="right")
    table.add_column("p50 ▏p95 ▏p99", ratio=1, no_wrap=True)
    for r in rows:
        line = Text()
        p50, p95, p99 = (r.p50_ms or 0.0), (r.p95_ms or 0.0), (r.p99_ms or 0.0)
        line.append(bar(p50 / top, 24), style=color_of(r.stage))
        line.append(bar(max(p95 - p50, 0) / top, 24), style=f"{color_of(r.stage)} dim")
        line.append(bar(max(p99 - p95, 0) / top, 24), style="grey37")
        table.add_row(Text(r.stage, style=color_of(r.stage)), pct(r.share), ms(r.p50_ms), ms(r.p95_ms), ms(r.p99_ms),
                      line)
    return table


def waterfall(requests: RequestIndex, request_id: str, width: int) -> Text:
    spans = requests.waterfall(request_id)
    if spans.empty:
        return Text(f"no spans for {request_id}")
    start = int(spans["ts_ns"].min())
    end = int(spans["end_ns"].max())
    extent = max(end - start, 1)
    text = Text()
    text.append(f"{request_id}", style="bold")
    text.append(f"  {ms(extent / 1e6)} end to end\n", style="dim")
    for span in spans.itertuples():
        label = span.name if span.source == "stages" else f"{span.source}"
        offset = min(round((span.ts_ns - start) / extent * width), width - 1)
        length = max(1, round(span.dur_ns / extent * width))
        text.append(f"{label[:12]:<12} ", style=color_of(str(span.name)))
        text.append(" " * offset)
        text.append("█" * min(length, width - offset), style=color_of(str(span.name)))
        text.append(" " * max(width - offset - length, 0))
        text.append(f" {ms(span.dur_ns / 1e6):>8}\n")
    batch_id = int(spans["batch_id"].max())
    members = requests.batch_of(batch_id)
    if batch_id >= 0:
        others = [m for m in members if m != request_id]
        text.append(f"batch {batch_id}: {len(members)} request(s)", style="bold")
        if others:
            text.append(" with " + ", ".join(others[:6]) + ("…" if len(others) > 6 else ""), style="dim")
        text.append("\n")
    return text
