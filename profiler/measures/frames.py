"""How sampled frames are named and grouped: one label per function (its name and enough of its
path to tell files apart), the source line where a function or a wait spends its time, and which
frames only wrap the real work (server frameworks, thread and event-loop plumbing)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from profiler.timeline import StackTable

# Frames that only dispatch: threads, pools and event loops, and the HTTP servers and web
# frameworks that call a handler. Their inclusive time is everything below them and says
# nothing; their own time is shown as one "framework dispatch" line.
WRAPPER_FILES = re.compile(
    r"/(threading|selectors|socketserver|runpy|socket|ssl)\.py$|/concurrent/futures/|/asyncio/|/http/server\.py$|"
    r"/(uvicorn|starlette|fastapi|anyio|werkzeug|flask|gunicorn|h11|httptools|aiohttp|sanic|click|uvloop)/")
WRAPPER_LABEL = "server framework dispatch (threads, event loop, HTTP server, web framework)"


class FrameLabels:
    """Function labels of a stack table, computed once: a function is (name, file), whatever
    the line."""

    def __init__(self, stacks: StackTable) -> None:
        self.stacks = stacks
        index: dict[tuple[str, str], int] = {}
        keys = np.empty(len(stacks.functions), dtype=np.int64)
        for i, key in enumerate(zip(stacks.functions, stacks.files)):
            keys[i] = index.setdefault(key, len(index))
        self.function_of_frame = keys
        self.functions = list(index)
        self.names = _unique_labels(self.functions)
        self.wrapper = np.asarray([WRAPPER_FILES.search(file.replace("\\", "/")) is not None
                                   for _, file in self.functions], dtype=bool)
        self.node_frames = np.asarray(stacks.node_frames, dtype=np.int64)

    def frame_text(self, frame: int) -> str:
        """``function (dir/file.py:line)``: one frame, at its line."""
        stacks = self.stacks
        return f"{stacks.functions[frame]} ({short_path(stacks.files[frame])}:{stacks.lines[frame]})"

    def where(self, samples: pd.DataFrame, top: int, with_caller: bool) -> list[str]:
        """The leaf frames (with their callers when ``with_caller``: where a wait was made from)
        holding most of these samples' time, each with its part of that time."""
        rows = samples[samples["stack_id"] >= 0]
        total = float(rows["dur_ns"].sum())
        if total <= 0:
            return []
        per_leaf = rows.groupby("stack_id")["dur_ns"].sum()
        texts: dict[str, float] = {}
        for leaf, ns in per_leaf.items():
            leaf = int(leaf)
            text = self.frame_text(int(self.node_frames[leaf]))
            parent = self.stacks.parents[leaf]
            if with_caller and parent >= 0:
                text += " ← " + self.frame_text(int(self.node_frames[parent]))
            texts[text] = texts.get(text, 0.0) + float(ns)
        ranked = sorted(texts.items(), key=lambda kv: -kv[1])[:top]
        return [f"{text} {ns / total:.0%}" for text, ns in ranked]


def short_path(path: str) -> str:
    """The last two parts of a source path: enough to tell most files apart."""
    return "/".join(path.replace("\\", "/").split("/")[-2:])


def _unique_labels(functions: list[tuple[str, str]]) -> list[str]:
    """``function (dir/file.py)`` per (function, file); where two still read the same, more of
    the path is shown until they differ."""
    labels = [f"{function} ({short_path(file)})" if file else function for function, file in functions]
    seen: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        seen.setdefault(label, []).append(i)
    for same in (rows for rows in seen.values() if len(rows) > 1):
        for i in same:
            function, file = functions[i]
            labels[i] = f"{function} ({file})"
    return labels
