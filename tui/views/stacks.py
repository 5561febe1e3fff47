"""py-spy samples as a collapsible call tree, hottest first, each node with its share and an
icicle bar; filtered by stage and by the window marked in the timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from profiler.analysis.model import EventRef
from tui.calltree import TreeFilter
from tui.format import bar, color_of, short_path

if TYPE_CHECKING:
    from tui.calltree import CallTree
    from tui.prepare import TuiData

BAR_WIDTH = 10


class StacksView(Vertical):
    BINDINGS = [
        Binding("g", "next_stage", "stage filter"),
        Binding("w", "toggle_window", "timeline window"),
        Binding("x", "expand_hot", "hot path"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.calltree: CallTree | None = None
        self.stage: str | None = None
        self.use_window = False
        self.window: tuple[int, int] | None = None

    def compose(self) -> ComposeResult:
        yield Static("loading the timeline…", id="stacks-status")
        tree: Tree[int] = Tree("samples", id="stacks-tree")
        tree.show_root = False
        tree.guide_depth = 2
        yield tree

    def show_data(self, data: TuiData) -> None:
        self.calltree = data.calltree
        self.rebuild()

    def focus_on(self, ref: EventRef) -> None:
        stages = self.calltree.stage_names() if self.calltree else []
        wanted = [s for s in ref.stages if s in stages]
        self.stage = wanted[0] if wanted else None
        if ref.start_ns is not None and ref.end_ns is not None:
            self.window, self.use_window = (ref.start_ns, ref.end_ns), True
        self.rebuild()

    def set_window(self, window: tuple[int, int] | None) -> None:
        self.window = window
        self.use_window = window is not None
        self.rebuild()

    def action_next_stage(self) -> None:
        if not self.calltree:
            return
        choices = [None, *self.calltree.stage_names()]
        self.stage = choices[(choices.index(self.stage) + 1) % len(choices)] if self.stage in choices else None
        self.rebuild()

    def action_toggle_window(self) -> None:
        if self.window is None:
            self.notify("mark a window in the timeline first (4, then m at each end)", severity="warning")
            return
        self.use_window = not self.use_window
        self.rebuild()

    def action_expand_hot(self) -> None:
        tree = self.query_one(Tree)
        node = tree.root
        for _ in (self.calltree.hot_path(0.2) if self.calltree else []):
            node.expand()
            self._fill(node)
            if not node.children:
                break
            node = node.children[0]
        tree.move_cursor(node)

    # -- drawing ---------------------------------------------------------------------------------

    def tree_filter(self) -> TreeFilter:
        start, end = self.window if (self.use_window and self.window) else (None, None)
        return TreeFilter(stage=self.stage, start_ns=start, end_ns=end)

    def rebuild(self) -> None:
        status = self.query_one("#stacks-status", Static)
        tree = self.query_one(Tree)
        tree.clear()
        if self.calltree is None:
            status.update("no py-spy samples in this session (run with the pyspy probe on)")
            return
        self.calltree.apply(self.tree_filter())
        text = Text()
        text.append(f"{self.calltree.samples:,} samples", style="bold")
        text.append(f" · {self.calltree.filter.describe()}")
        text.append("   g stage · w timeline window · x hot path · Enter open/close", style="dim italic")
        status.update(text)
        tree.root.data = -1
        self._fill(tree.root)
        tree.root.expand()
        node = tree.root
        for _ in self.calltree.hot_path():
            if not node.children:
                break
            node = node.children[0]
            self._fill(node)
            node.expand()

    def _fill(self, node: TreeNode[int]) -> None:
        """Add a node's children the first time it is shown (big trees stay cheap)."""
        if node.children or self.calltree is None or node.data is None:
            return
        for child in self.calltree.children(node.data):
            leaf = not self.calltree.children(child)
            label = self._label(child)
            if leaf:
                node.add_leaf(label, data=child)
            else:
                node.add(label, data=child)

    def _label(self, node: int) -> Text:
        tree = self.calltree
        share = tree.total[node] / max(tree.samples, 1)
        own = tree.own[node] / max(tree.samples, 1)
        function, file, line = tree.frame(node)
        text = Text()
        text.append(f"{share:6.1%} ", style="bold")
        text.append(f"{bar(share, BAR_WIDTH):<{BAR_WIDTH}}", style=color_of(function))
        text.append(f" {function}")
        text.append(f"  {short_path(file)}:{line}", style="dim")
        if own >= 0.005:
            text.append(f"  self {own:.1%}", style="yellow")
        return text

    def on_tree_node_expanded(self, event: Tree.NodeExpanded) -> None:
        self._fill(event.node)
