"""The columnar timeline: every event of every source, on one clock, in one DataFrame.

Schema (one row per event; see STYLE.md):

=========== ============ ==========================================================
column      dtype        meaning
=========== ============ ==========================================================
ts_ns       int64        start (spans), sample or reading time; Unix-epoch ns
dur_ns      int64        span duration; 0 for samples, counters and instants
source      category     stages, ort, torch, pyspy, proc, nvml, scalene, loadgen ...
kind        category     span, sample, counter, instant
name        category     stage name, op / kernel name, function, counter name
stage       category     closed stage vocabulary, or missing
pid         int64        OS process id; GPU d is gpu_pid(d) = -100 - d; -1 when unknown
tid         int64        OS thread id, or a GPU stream / lane id (-1 when unknown)
request_id  category     the request a span belongs to, or missing
batch_id    int64        the batch a span belongs to, -1 for none
stack_id    int64        samples: leaf node in the stack table, -1 for none
value       float64      counters: the reading; samples: weight; NaN otherwise
args        string       compact JSON of source-specific fields, or missing
=========== ============ ==========================================================

This module imports nothing of ours: it is the data model the rest depends on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

Kind = Literal["span", "sample", "counter", "instant"]
KINDS: tuple[Kind, ...] = ("span", "sample", "counter", "instant")
STAGES: tuple[str, ...] = ("receive", "deserialize", "decode", "preprocess", "queue", "h2d", "inference", "d2h",
                           "postprocess", "serialize", "model_load", "other")
INT_COLUMNS = ("ts_ns", "dur_ns", "pid", "tid", "batch_id", "stack_id")
CATEGORY_COLUMNS = ("source", "kind", "name", "stage", "request_id")
COLUMNS = ("ts_ns", "dur_ns", "source", "kind", "name", "stage", "pid", "tid", "request_id", "batch_id",
           "stack_id", "value", "args")
_INT_DEFAULTS = {"dur_ns": 0, "pid": -1, "tid": -1, "batch_id": -1, "stack_id": -1}


class SchemaError(ValueError):
    pass


def gpu_pid(device: int | np.ndarray) -> int | np.ndarray:
    """Timeline pid of GPU ``device`` (or an array of them): negative, so a GPU lane never
    collides with an OS pid."""
    return -100 - device


def make_events(
    *,
    ts_ns: Sequence[int] | np.ndarray,
    source: str,
    kind: Kind | Sequence[str] | np.ndarray,
    name: Sequence[str] | np.ndarray | str,
    **columns: object,
) -> pd.DataFrame:
    """Build a schema-conforming frame from column arrays (scalars broadcast).

    Missing optional columns take their defaults; unknown columns are an error, so a
    typo never silently drops data.
    """
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise SchemaError(f"unknown timeline columns: {', '.join(sorted(unknown))}")
    n = len(ts_ns)
    data: dict[str, object] = {"ts_ns": np.asarray(ts_ns, dtype=np.int64)}
    for col, default in _INT_DEFAULTS.items():
        data[col] = _broadcast(columns.get(col, default), n, np.int64)
    data["value"] = _broadcast(columns.get("value", np.nan), n, np.float64)
    data["source"] = _categorical(source, n)
    data["kind"] = (pd.Categorical.from_codes(np.full(n, KINDS.index(kind), dtype=np.int8), categories=KINDS)
                    if isinstance(kind, str) else pd.Categorical(_broadcast_obj(kind, n), categories=KINDS))
    data["name"] = _categorical(name, n)
    stage = columns.get("stage")
    if isinstance(stage, pd.Categorical):
        data["stage"] = stage.set_categories(STAGES)
    elif stage is None or isinstance(stage, str):
        code = -1 if stage is None else STAGES.index(stage)
        data["stage"] = pd.Categorical.from_codes(np.full(n, code, dtype=np.int8), categories=STAGES)
    else:
        data["stage"] = pd.Categorical(_broadcast_obj(stage, n), categories=STAGES)
    data["request_id"] = _categorical(columns.get("request_id"), n)
    args = columns.get("args")
    if args is None:
        data["args"] = pd.arrays.ArrowStringArray(pa.nulls(n, pa.large_string()))
    elif isinstance(args, (pa.Array, pa.ChunkedArray)):  # already Arrow (JSON text): no Python strings
        if len(args) != n:
            raise SchemaError(f"column length {len(args)} != {n}")
        data["args"] = pd.arrays.ArrowStringArray(args.cast(pa.large_string()))
    else:
        data["args"] = pd.array(_broadcast_obj(args, n), dtype="string")
    frame = pd.DataFrame(data, columns=list(COLUMNS), copy=False)  # no block consolidation copy
    if (frame["dur_ns"] < 0).any():
        raise SchemaError(f"{source}: negative span durations")
    return frame


def empty_events() -> pd.DataFrame:
    return make_events(ts_ns=[], source="none", kind="span", name=[])


def _broadcast(value: object, n: int, dtype: type) -> np.ndarray:
    if np.isscalar(value) or value is None:
        # One element seen n times (read-only, zero stride): a constant column of a million
        # spans costs 8 bytes until the merge writes it out.
        return np.broadcast_to(np.asarray(np.nan if value is None else value, dtype=dtype), (n,))
    array = np.asarray(value, dtype=dtype)
    if len(array) != n:
        raise SchemaError(f"column length {len(array)} != {n}")
    return array


def _categorical(value: object, n: int) -> pd.Categorical:
    """Categorical column; a Categorical passed in (built from codes) is used as it is."""
    if isinstance(value, pd.Categorical):
        if len(value) != n:
            raise SchemaError(f"column length {len(value)} != {n}")
        return value
    if value is None or isinstance(value, str):  # one value for every row: codes, not strings
        return pd.Categorical.from_codes(np.full(n, -1 if value is None else 0, dtype=np.int8),
                                         categories=[] if value is None else [value])
    return pd.Categorical(_broadcast_obj(value, n))


def _broadcast_obj(value: object, n: int) -> list | np.ndarray:
    if value is None or isinstance(value, str):
        return [value] * n
    values = value if isinstance(value, np.ndarray) else list(value)  # type: ignore[arg-type]
    if len(values) != n:
        raise SchemaError(f"column length {len(values)} != {n}")
    return values


def merge_events(frames: Iterable[pd.DataFrame], consume: bool = False) -> pd.DataFrame:
    """Concatenate per-source frames into one, sorted by time (stable), categories unioned.

    Built column by column through one shared sort order, so the peak holds the inputs and
    one output column in flight, not the two full copies a concat-then-sort would make. With
    ``consume`` each input column is dropped from its frame once merged (the inputs are left
    empty), so the peak is about one copy of the data.
    """
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_events()
    if len(frames) == 1 and _is_sorted(frames[0]["ts_ns"].to_numpy()):
        return frames[0].reset_index(drop=True)
    order = np.argsort(np.concatenate([f["ts_ns"].to_numpy() for f in frames]), kind="stable")
    # rank[i]: where input row i lands. Each output column is allocated once and filled from
    # the inputs in place, with no concatenated temporary.
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    del order
    bounds = np.cumsum([0] + [len(f) for f in frames])
    data: dict[str, object] = {}
    for col in COLUMNS:
        first = frames[0][col]
        if isinstance(first.dtype, pd.CategoricalDtype):
            categories = pd.Index(np.concatenate([f[col].cat.categories.astype(object) for f in frames])).unique()
            if col in ("kind", "stage"):
                categories = first.cat.categories  # fixed vocabularies
            codes = np.empty(len(rank), dtype=np.int8 if len(categories) < 2**7 else np.int16
                             if len(categories) < 2**15 else np.int32)
            for i, f in enumerate(frames):
                codes[rank[bounds[i]:bounds[i + 1]]] = f[col].cat.set_categories(categories).cat.codes.to_numpy()
            data[col] = pd.Categorical.from_codes(codes, categories=categories)
        elif col == "args":
            data[col] = _merge_text(frames, rank, bounds)
        else:
            out = np.empty(len(rank), dtype=first.dtype)
            for i, f in enumerate(frames):
                out[rank[bounds[i]:bounds[i + 1]]] = f[col].to_numpy()
            data[col] = out
        if consume:
            for frame in frames:
                del frame[col]
    return pd.DataFrame(data, columns=list(COLUMNS), copy=False)


def _merge_text(frames: list[pd.DataFrame], rank: np.ndarray, bounds: np.ndarray) -> pd.arrays.ArrowStringArray:
    """The args column merged: only inputs holding any text are gathered (stage spans carry
    none), by one take whose indices are null for rows without text."""
    chunks, offset = [], 0
    index = np.full(len(rank), -1, dtype=np.int64)
    for i, f in enumerate(frames):
        values = pa.array(f["args"].array, type=pa.large_string(), from_pandas=True)
        if values.null_count == len(values):
            continue
        index[rank[bounds[i]:bounds[i + 1]]] = np.arange(offset, offset + len(values))
        chunks.append(values)
        offset += len(values)
    if not chunks:
        return pd.arrays.ArrowStringArray(pa.nulls(len(rank), pa.large_string()))
    source = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
    return pd.arrays.ArrowStringArray(source.take(pa.array(index, mask=index < 0)))


def _is_sorted(values: np.ndarray) -> bool:
    return bool(len(values) < 2 or (values[1:] >= values[:-1]).all())


def validate(events: pd.DataFrame) -> None:
    """Raise :class:`SchemaError` unless ``events`` follows the schema."""
    missing = [c for c in COLUMNS if c not in events.columns]
    if missing:
        raise SchemaError(f"missing columns: {', '.join(missing)}")
    for col in INT_COLUMNS:
        if events[col].dtype != np.int64:
            raise SchemaError(f"{col} must be int64, is {events[col].dtype}")
    for col in CATEGORY_COLUMNS:
        if not isinstance(events[col].dtype, pd.CategoricalDtype):
            raise SchemaError(f"{col} must be categorical, is {events[col].dtype}")
    bad_kinds = set(events["kind"].dropna().unique()) - set(KINDS)
    if bad_kinds:
        raise SchemaError(f"unknown kinds: {sorted(bad_kinds)}")


@dataclass
class StackTable:
    """Call stacks stored once, as a trie: node ``i`` is (parent node, frame). A sample's
    ``stack_id`` is its leaf node; walking parents gives the stack, leaf first."""

    functions: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    node_frames: list[int] = field(default_factory=list)
    _frame_index: dict[tuple[str, str, int], int] = field(default_factory=dict, repr=False)
    _node_index: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    def intern(self, frames_root_first: Iterable[tuple[str, str, int]]) -> int:
        """Add a stack given as (function, file, line) frames, root first; return its leaf id."""
        node = -1
        for frame in frames_root_first:
            node = self._extend(node, frame)
        return node

    def frames_of(self, stack_id: int) -> list[tuple[str, str, int]]:
        """The stack of a leaf node, root first."""
        out = []
        while stack_id >= 0:
            f = self.node_frames[stack_id]
            out.append((self.functions[f], self.files[f], self.lines[f]))
            stack_id = self.parents[stack_id]
        return out[::-1]

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        frames = pd.DataFrame({"function": pd.array(self.functions, dtype="string"),
                               "file": pd.array(self.files, dtype="string"),
                               "line": np.asarray(self.lines, dtype=np.int64)})
        nodes = pd.DataFrame({"parent": np.asarray(self.parents, dtype=np.int64),
                              "frame": np.asarray(self.node_frames, dtype=np.int64)})
        return frames, nodes

    @classmethod
    def from_frames(cls, frames: pd.DataFrame, nodes: pd.DataFrame) -> StackTable:
        table = cls(functions=frames["function"].astype(str).tolist(), files=frames["file"].astype(str).tolist(),
                    lines=frames["line"].astype(int).tolist(), parents=nodes["parent"].astype(int).tolist(),
                    node_frames=nodes["frame"].astype(int).tolist())
        table._frame_index = {(f, p, ln): i for i, (f, p, ln) in enumerate(zip(table.functions, table.files,
                                                                               table.lines))}
        table._node_index = {(p, f): i for i, (p, f) in enumerate(zip(table.parents, table.node_frames))}
        return table

    def merge(self, other: StackTable) -> Mapping[int, int]:
        """Add ``other``'s stacks to this table; return other's node id -> this table's id."""
        mapping: dict[int, int] = {}
        for node in range(len(other.parents)):
            parent = other.parents[node]
            f = other.node_frames[node]
            frame = (other.functions[f], other.files[f], other.lines[f])
            base = mapping[parent] if parent >= 0 else -1
            mapping[node] = self._extend(base, frame)
        return mapping

    def _extend(self, node: int, frame: tuple[str, str, int]) -> int:
        frame_id = self._frame_index.get(frame)
        if frame_id is None:
            frame_id = self._frame_index[frame] = len(self.functions)
            self.functions.append(frame[0])
            self.files.append(frame[1])
            self.lines.append(int(frame[2]))
        key = (node, frame_id)
        child = self._node_index.get(key)
        if child is None:
            child = self._node_index[key] = len(self.parents)
            self.parents.append(node)
            self.node_frames.append(frame_id)
        return child
