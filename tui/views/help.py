"""``?``: what each view shows and the keys that drive it."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("everywhere", (("1 … 5", "findings, hotspots, stages, timeline, stacks"), ("e", "export the marked window "
     "(or the visible one) as a Chrome trace for Perfetto"), ("?", "this help"), ("q", "quit"))),
    ("1 findings", (("↑↓", "choose a finding"), ("Enter", "its evidence, the fix and the events behind it")),),
    ("a finding", (("Enter / t", "the timeline at its events"), ("h", "its rows in the hotspots"),
                   ("s", "the stacks of its stage"), ("Esc", "back"))),
    ("2 hotspots", (("/", "filter names by a regular expression (Esc clears)"), ("s", "next source"),
                    ("o", "next sort column (or click a header)"), ("r", "reverse the order"))),
    ("3 stages", (("↑↓", "choose a request: its waterfall and batch on the right"),)),
    ("4 timeline", (("←→", "move the cursor (the readout says what runs there)"), ("↑↓ / j k", "choose a lane"),
                    ("+ − / i o / wheel", "zoom around the cursor"), ("h l / shift+←→", "pan"),
                    ("0", "the whole session"), ("m", "mark one end of a window, then the other"),
                    ("z", "zoom to the marked window"))),
    ("5 stacks", (("Enter / click", "open or close a call"), ("g", "filter by stage"),
                  ("w", "only the window marked in the timeline"), ("x", "open the hot path"))),
)


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for view, keys in KEYS:
            table.add_row(Text(view, style="bold underline"), "")
            for key, what in keys:
                table.add_row(key, what)
        intro = Text("Start at the findings: the top one is the bottleneck. Enter shows why (the measured "
                     "evidence), what to change (the fix) and what it should buy; from there t, h and s take "
                     "you to the events behind it.\n", style="italic")
        with VerticalScroll(id="help-box"):
            yield Static(intro)
            yield Static(table)
            yield Static(Text("Esc or ? closes this help", style="dim"))
