"""Lanes per source, process and thread on one time axis, with counters as sparklines; zoom and
pan from the keyboard or mouse, and a cursor that says what runs at that instant."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from profiler.analysis.model import EventRef
from tui.format import color_of, ns

if TYPE_CHECKING:
    from tui.lanes import Lane
    from tui.prepare import TuiData

LABEL_WIDTH = 22
SHADES = " ░▒▓█"
SPARKS = " ▁▂▃▄▅▆▇█"
MIN_WINDOW_NS = 1_000


class TimelineCanvas(Widget, can_focus=True):
    """The lanes. State is plain numbers (window, cursor column, lane), so tests can read it."""

    BINDINGS = [
        Binding("left", "cursor(-1)", "cursor", show=False),
        Binding("right", "cursor(1)", "cursor", show=False),
        Binding("shift+left,h", "pan(-0.25)", "pan ←"),
        Binding("shift+right,l", "pan(0.25)", "pan →"),
        Binding("plus,equals_sign,i", "zoom(0.5)", "zoom in"),
        Binding("minus,o", "zoom(2.0)", "zoom out"),
        Binding("0", "reset", "all"),
        Binding("up,k", "lane(-1)", "lane", show=False),
        Binding("down,j", "lane(1)", "lane", show=False),
        Binding("m", "mark", "mark window"),
        Binding("z", "zoom_selection", "zoom to mark"),
    ]

    window: reactive[tuple[int, int]] = reactive((0, 1))
    cursor: reactive[int] = reactive(0)
    lane_index: reactive[int] = reactive(0)

    def __init__(self) -> None:
        super().__init__()
        self.lanes: list[Lane] = []
        self.bounds = (0, 1)
        self.marks: list[int] = []
        self.selection: tuple[int, int] | None = None
        self.highlight_source: str | None = None
        self.highlight_names: set[str] = set()
        self.lane_top = 0

    def load(self, data: TuiData) -> None:
        self.lanes = data.lanes
        self.bounds = (data.start_ns, max(data.end_ns, data.start_ns + MIN_WINDOW_NS))
        self.window = self.bounds
        self.call_after_refresh(self._center_cursor)

    def _center_cursor(self) -> None:
        self.cursor = self.cells // 2
        self.post_message(TimelineView.Moved())

    def on_resize(self) -> None:
        self.cursor = min(self.cursor, self.cells - 1)
        self.post_message(TimelineView.Moved())

    # -- geometry ------------------------------------------------------------------------------

    @property
    def cells(self) -> int:
        return max(self.size.width - LABEL_WIDTH - 1, 10)

    def time_at(self, column: int) -> int:
        t0, t1 = self.window
        return int(t0 + (column + 0.5) * (t1 - t0) / self.cells)

    def column_of(self, t: int) -> int:
        t0, t1 = self.window
        return int((t - t0) * self.cells / max(t1 - t0, 1))

    def _set_window(self, t0: int, t1: int) -> None:
        lo, hi = self.bounds
        span = min(max(t1 - t0, MIN_WINDOW_NS), hi - lo)
        t0 = min(max(t0, lo), hi - span)
        self.window = (int(t0), int(t0 + span))

    # -- actions ---------------------------------------------------------------------------------

    def action_cursor(self, step: int) -> None:
        column = self.cursor + step
        if column < 0 or column >= self.cells:  # past the edge: the view follows the cursor
            self.action_pan(step / self.cells * 4)
            column = min(max(column, 0), self.cells - 1)
        self.cursor = column

    def action_pan(self, fraction: float) -> None:
        t0, t1 = self.window
        shift = int((t1 - t0) * fraction)
        self._set_window(t0 + shift, t1 + shift)

    def action_zoom(self, factor: float, at: int | None = None) -> None:
        t0, t1 = self.window
        center = self.time_at(self.cursor) if at is None else at
        span = (t1 - t0) * factor
        left = (center - t0) / max(t1 - t0, 1)
        self._set_window(int(center - span * left), int(center + span * (1 - left)))
        self.cursor = min(max(self.column_of(center), 0), self.cells - 1)

    def action_reset(self) -> None:
        self.window = self.bounds

    def action_lane(self, step: int) -> None:
        if self.lanes:
            self.lane_index = min(max(self.lane_index + step, 0), len(self.lanes) - 1)
            rows = max(self.size.height - 1, 1)
            if self.lane_index < self.lane_top:
                self.lane_top = self.lane_index
            elif self.lane_index >= self.lane_top + rows:
                self.lane_top = self.lane_index - rows + 1
            self.refresh()

    def action_mark(self) -> None:
        """First press marks one end of a window, the second the other end."""
        t = self.time_at(self.cursor)
        self.marks = [*self.marks[-1:], t] if len(self.marks) < 2 else [t]
        self.selection = (min(self.marks), max(self.marks)) if len(self.marks) == 2 else None
        self.refresh()
        self.post_message(TimelineView.SelectionChanged(self.selection))

    def action_zoom_selection(self) -> None:
        if self.selection:
            self._set_window(*self.selection)

    def focus_on(self, ref: EventRef) -> None:
        self.highlight_source = ref.source
        self.highlight_names = set(ref.names) | set(ref.stages)
        if ref.start_ns is not None and ref.end_ns is not None:
            pad = max((ref.end_ns - ref.start_ns) // 20, MIN_WINDOW_NS)
            self._set_window(ref.start_ns - pad, ref.end_ns + pad)
        else:
            self.window = self.bounds
        matching = [i for i, lane in enumerate(self.lanes) if self._highlighted(lane)]
        if matching:
            self.lane_top = self.lane_index = matching[0]
        self.refresh()

    def _highlighted(self, lane: Lane) -> bool:
        if self.highlight_source is None or lane.source != self.highlight_source:
            return False
        return not self.highlight_names or bool(self.highlight_names & set(lane.names))

    # -- mouse -----------------------------------------------------------------------------------

    def on_click(self, event: events.Click) -> None:
        if event.x > LABEL_WIDTH:
            self.cursor = min(event.x - LABEL_WIDTH - 1, self.cells - 1)
        if event.y >= 1 and self.lanes:
            self.lane_index = min(self.lane_top + event.y - 1, len(self.lanes) - 1)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.action_zoom(0.5, self.time_at(max(event.x - LABEL_WIDTH - 1, 0)))

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.action_zoom(2.0, self.time_at(max(event.x - LABEL_WIDTH - 1, 0)))

    # -- drawing ---------------------------------------------------------------------------------

    def watch_window(self) -> None:
        self.post_message(TimelineView.Moved())

    def watch_cursor(self) -> None:
        self.post_message(TimelineView.Moved())

    def watch_lane_index(self) -> None:
        self.post_message(TimelineView.Moved())

    def render(self) -> Text:
        if not self.lanes:
            return Text("loading the timeline…" if not self.bounds[1] > 1 else "no events in this session")
        width = self.cells
        text = self._axis(width)
        rows = max(self.size.height - 1, 1)
        sel = self._selection_columns(width)
        for i in range(self.lane_top, min(self.lane_top + rows, len(self.lanes))):
            text.append("\n")
            lane = self.lanes[i]
            label_style = "reverse" if i == self.lane_index else "bold yellow" if self._highlighted(lane) else ""
            text.append(f"{lane.label[:LABEL_WIDTH - 1]:<{LABEL_WIDTH}}", style=label_style)
            text.append("│", style="dim")
            text.append_text(self._lane_cells(lane, width, sel))
        return text

    def _axis(self, width: int) -> Text:
        t0, t1 = self.window
        left = f"+{ns(t0 - self.bounds[0])}"
        right = f"+{ns(t1 - self.bounds[0])}"
        middle = f"◆ +{ns(self.time_at(self.cursor) - self.bounds[0])}"
        line = [" "] * width
        for pos, label in ((0, left), (max(width - len(right), 0), right)):
            line[pos:pos + len(label)] = label
        center = min(max(self.cursor - len(middle) // 2, len(left) + 1), max(width - len(right) - len(middle) - 1, 0))
        if center > len(left) and center + len(middle) < width - len(right):
            line[center:center + len(middle)] = middle
        return Text(f"{'time (span ' + ns(t1 - t0) + ')':<{LABEL_WIDTH}}│" + "".join(line[:width]), style="dim")

    def _selection_columns(self, width: int) -> tuple[int, int] | None:
        if not self.selection:
            return None
        return self.column_of(self.selection[0]), self.column_of(self.selection[1])

    def _lane_cells(self, lane: Lane, width: int, sel: tuple[int, int] | None) -> Text:
        t0, t1 = self.window
        cells = Text()
        dim_others = lane.source == self.highlight_source and bool(self.highlight_names)
        if lane.kind == "counter":
            values = lane.counter_columns(t0, t1, width)
            top = np.nanmax(lane.values) if len(lane.values) and np.isfinite(lane.values).any() else 0.0
            for c, v in enumerate(values):
                level = 0 if not np.isfinite(v) or top <= 0 else 1 + int(min(v / top, 1.0) * (len(SPARKS) - 2))
                cells.append(SPARKS[level], style=self._cell_style(c, sel, "#87afaf"))
            return cells
        codes, busy = lane.columns(t0, t1, width)
        for c in range(width):
            code = int(codes[c])
            if code < 0:
                cells.append(" ", style=self._cell_style(c, sel, None))
                continue
            name = lane.names[code]
            shade = SHADES[min(1 + int(busy[c] * 4), 4)]
            color = color_of(name)
            if dim_others and name not in self.highlight_names:
                color = "grey30"
            cells.append(shade, style=self._cell_style(c, sel, color))
        return cells

    def _cell_style(self, column: int, sel: tuple[int, int] | None, color: str | None) -> str:
        style = color or ""
        if sel and sel[0] <= column <= sel[1]:
            style += " on grey23"
        if column == self.cursor:
            style += " reverse"
        return style.strip()


class TimelineView(Vertical):
    class Moved(Message):
        """The window, cursor or lane changed: the readout below follows."""

    class SelectionChanged(Message):
        def __init__(self, selection: tuple[int, int] | None) -> None:
            super().__init__()
            self.selection = selection

    def compose(self) -> ComposeResult:
        yield TimelineCanvas()
        yield Static("", id="timeline-readout")

    @property
    def canvas(self) -> TimelineCanvas:
        return self.query_one(TimelineCanvas)

    def show_data(self, data: TuiData) -> None:
        self.canvas.load(data)
        self.canvas.refresh()

    def focus_on(self, ref: EventRef) -> None:
        self.canvas.focus_on(ref)

    def export_window(self) -> tuple[int, int]:
        return self.canvas.selection or self.canvas.window

    def highlighted_sources(self) -> list[str] | None:
        return [self.canvas.highlight_source] if self.canvas.highlight_source else None

    def on_timeline_view_moved(self, message: Moved) -> None:
        self.query_one("#timeline-readout", Static).update(self.readout())

    def readout(self) -> Text:
        canvas = self.canvas
        if not canvas.lanes:
            return Text("")
        t = canvas.time_at(canvas.cursor)
        lane = canvas.lanes[canvas.lane_index]
        text = Text()
        text.append(f"◆ +{ns(t - canvas.bounds[0])}", style="bold")
        text.append(f"  {lane.label}: ", style="bold")
        if lane.kind == "counter":
            value = lane.value_at(t)
            text.append("—" if value is None else f"{value:,.4g}")
        else:
            text.append(running_text(lane.at(t)))
        if canvas.selection:
            a, b = canvas.selection
            text.append(f"\nmarked +{ns(a - canvas.bounds[0])} … +{ns(b - canvas.bounds[0])} ({ns(b - a)})"
                        "  z zoom to it · e export it · 5 stacks of it", style="yellow")
        else:
            text.append("\n←→ cursor · ↑↓ lane · +/- zoom · h/l pan · 0 all · m mark a window",
                        style="dim italic")
        return text


def running_text(running: list[tuple[str, int, int]]) -> Text:
    """What runs at an instant, one entry per name: ``decode 1.41 ms``, ``request ×8 (226–229 ms)``."""
    if not running:
        return Text("idle", style="dim")
    by_name: dict[str, list[int]] = {}
    for name, _, dur in running:
        by_name.setdefault(name, []).append(dur)
    parts = []
    for name, durs in list(by_name.items())[:4]:
        if len(durs) == 1:
            parts.append(f"{name} {ns(durs[0])}")
        else:
            parts.append(f"{name} ×{len(durs)} ({ns(min(durs))}–{ns(max(durs))})")
    return Text(" · ".join(parts) + (" …" if len(by_name) > 4 else ""))
