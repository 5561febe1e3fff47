"""Every span name and sampled function of every source in one sortable, filterable table."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from profiler.analysis.model import EventRef
from tui.format import ms, pct

if TYPE_CHECKING:
    import pandas as pd

    from tui.prepare import TuiData

SORT_COLUMNS = ("total_ms", "self_ms", "share", "count", "name")
COLUMN_TITLES = {"source": "source", "kind": "kind", "name": "name", "total_ms": "total", "self_ms": "self",
                 "share": "share", "count": "count"}
MAX_ROWS = 2000  # a DataTable of more is slow to fill and nobody scrolls past it: filter instead


class HotspotsView(Vertical):
    BINDINGS = [
        Binding("slash", "filter", "filter"),
        Binding("s", "next_source", "source"),
        Binding("o", "next_sort", "sort column"),
        Binding("r", "reverse", "reverse"),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.table: Any = None  # the hotspot DataFrame once loaded
        self.sources: list[str] = ["all"]
        self.source = "all"
        self.sort_column = "total_ms"
        self.descending = True
        self.pattern = ""
        self.shown: Any = None

    def compose(self) -> ComposeResult:
        yield Static("loading the timeline…", id="hotspots-status")
        yield Input(placeholder="filter by name (regular expression), Enter to apply, Esc to clear",
                    id="hotspots-filter")
        table = DataTable(id="hotspots-table", cursor_type="row", zebra_stripes=True)
        for key in ("total_ms", "self_ms", "share", "count", "source", "kind", "name"):
            table.add_column(COLUMN_TITLES[key], key=key)
        yield table

    def on_mount(self) -> None:
        self.query_one(Input).display = False

    def show_data(self, data: TuiData) -> None:
        if data.hotspots is None:
            self.query_one("#hotspots-status", Static).update("no spans or samples in this session")
            return
        self.table = data.hotspots
        self.sources = ["all", *dict.fromkeys(self.table["source"].astype(str))]
        self.refresh_table()

    def focus_on(self, ref: EventRef) -> None:
        """Show the rows behind a finding: its source, its names or stages."""
        names = ref.names + ref.stages
        self.source = ref.source if ref.source in self.sources else "all"
        self.pattern = "|".join(f"^{re.escape(n)}$" for n in names) if names else ""
        self.query_one(Input).value = self.pattern
        self.refresh_table()

    # -- actions -----------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one(Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.set_filter(event.value)
        self.query_one(DataTable).focus()

    def set_filter(self, pattern: str) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.notify(f"not a regular expression: {exc}", severity="warning")
            return
        self.pattern = pattern
        self.query_one(Input).display = bool(pattern)
        self.refresh_table()

    def action_clear_filter(self) -> None:
        self.query_one(Input).value = ""
        self.set_filter("")
        self.query_one(DataTable).focus()

    def action_next_source(self) -> None:
        self.source = self.sources[(self.sources.index(self.source) + 1) % len(self.sources)]
        self.refresh_table()

    def action_next_sort(self) -> None:
        self.sort_column = SORT_COLUMNS[(SORT_COLUMNS.index(self.sort_column) + 1) % len(SORT_COLUMNS)]
        self.descending = self.sort_column != "name"
        self.refresh_table()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.refresh_table()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key not in SORT_COLUMNS:
            return
        if key == self.sort_column:
            self.descending = not self.descending
        else:
            self.sort_column, self.descending = key, key != "name"
        self.refresh_table()

    # -- drawing -------------------------------------------------------------------------------

    def filtered(self) -> pd.DataFrame:
        rows = self.table
        if self.source != "all":
            rows = rows[rows["source"] == self.source]
        if self.pattern:
            rows = rows[rows["name"].astype(str).str.contains(self.pattern, regex=True, case=False)]
        key = rows[self.sort_column].fillna(-np.inf) if self.sort_column != "name" else rows["name"].str.lower()
        return rows.iloc[np.argsort(key.to_numpy(), kind="stable")[::-1 if self.descending else 1]]

    def refresh_table(self) -> None:
        if self.table is None:
            return
        rows = self.filtered()
        self.shown = rows.head(MAX_ROWS)
        table = self.query_one(DataTable)
        table.clear()
        table.add_rows([(ms(r.total_ms), ms(r.self_ms), pct(r.share), f"{r.count:,}", r.source, r.kind,
                         Text(str(r.name))) for r in self.shown.itertuples(index=False)])
        for key in COLUMN_TITLES:
            arrow = (" ▼" if self.descending else " ▲") if key == self.sort_column else ""
            table.columns[key].label = Text(COLUMN_TITLES[key] + arrow)
        table.refresh()
        more = f" (first {MAX_ROWS:,})" if len(rows) > MAX_ROWS else ""
        status = Text()
        status.append(f"source {self.source}", style="bold")
        status.append(f" · sort {COLUMN_TITLES[self.sort_column]} {'▼' if self.descending else '▲'}")
        if self.pattern:
            status.append(f" · filter /{self.pattern}/", style="yellow")
        status.append(f" · {len(rows):,} of {len(self.table):,} rows{more}", style="dim")
        status.append("   s source · o sort · r reverse · / filter", style="dim italic")
        self.query_one("#hotspots-status", Static).update(status)
