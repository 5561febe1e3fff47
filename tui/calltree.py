"""py-spy samples as a call tree: the stack table is already a trie (one node per call path),
so a node's inclusive count is its own samples plus its descendants'. Filtering by stage or
time window recounts in one pass over the nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from profiler.timeline import StackTable


@dataclass(frozen=True)
class TreeFilter:
    stage: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None

    def describe(self) -> str:
        parts = []
        if self.stage:
            parts.append(f"stage {self.stage}")
        if self.start_ns is not None and self.end_ns is not None:
            parts.append(f"window {(self.end_ns - self.start_ns) / 1e6:,.1f} ms")
        return ", ".join(parts) or "all samples"


class CallTree:
    """Inclusive and self sample counts per call path, for the samples a filter keeps."""

    def __init__(self, stacks: StackTable, stack_ids: np.ndarray, ts_ns: np.ndarray,
                 stages: np.ndarray | None = None) -> None:
        self.stacks = stacks
        self.stack_ids = np.asarray(stack_ids, dtype=np.int64)
        self.ts_ns = np.asarray(ts_ns, dtype=np.int64)
        self.stages = stages
        parents = np.asarray(stacks.parents, dtype=np.int64)
        self._parents = parents
        self._order = self._parents_first(parents)
        order = np.argsort(parents, kind="stable")
        self._child_order = order
        self._child_bounds = np.searchsorted(parents[order], np.arange(-1, len(parents) + 1))
        self.filter = TreeFilter()
        self.total = np.zeros(len(parents), dtype=np.int64)
        self.own = np.zeros(len(parents), dtype=np.int64)
        self.samples = 0
        self.apply(TreeFilter())

    @staticmethod
    def _parents_first(parents: np.ndarray) -> np.ndarray:
        """Nodes ordered so that every parent comes before its children."""
        if np.all(parents < np.arange(len(parents))):
            return np.arange(len(parents))
        depth = np.zeros(len(parents), dtype=np.int64)
        for _ in range(len(parents)):
            new = np.where(parents >= 0, depth[np.maximum(parents, 0)] + 1, 0)
            if np.array_equal(new, depth):
                break
            depth = new
        return np.argsort(depth, kind="stable")

    def stage_names(self) -> list[str]:
        return sorted(set(self.stages.tolist())) if self.stages is not None else []

    def apply(self, tree_filter: TreeFilter) -> None:
        keep = self.stack_ids >= 0
        if tree_filter.stage and self.stages is not None:
            keep &= self.stages == tree_filter.stage
        if tree_filter.start_ns is not None:
            keep &= self.ts_ns >= tree_filter.start_ns
        if tree_filter.end_ns is not None:
            keep &= self.ts_ns < tree_filter.end_ns
        self.filter = tree_filter
        self.own = np.bincount(self.stack_ids[keep], minlength=len(self._parents)).astype(np.int64)
        total = self.own.copy()
        for node in self._order[::-1]:  # children before parents
            parent = self._parents[node]
            if parent >= 0:
                total[parent] += total[node]
        self.total = total
        self.samples = int(keep.sum())

    def children(self, node: int) -> list[int]:
        """Children of ``node`` (-1: the roots) with samples under the filter, most first."""
        lo, hi = self._child_bounds[node + 1], self._child_bounds[node + 2]
        kids = self._child_order[lo:hi]
        kids = kids[self.total[kids] > 0]
        return kids[np.argsort(-self.total[kids], kind="stable")].tolist()

    def frame(self, node: int) -> tuple[str, str, int]:
        f = self.stacks.node_frames[node]
        return self.stacks.functions[f], self.stacks.files[f], self.stacks.lines[f]

    def hot_path(self, threshold: float = 0.5) -> list[int]:
        """From the roots down, the child holding at least ``threshold`` of the samples."""
        path: list[int] = []
        node = -1
        while self.samples:
            kids = self.children(node)
            if not kids or self.total[kids[0]] < threshold * self.samples:
                break
            node = kids[0]
            path.append(node)
        return path
