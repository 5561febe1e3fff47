"""In-process stage span recorder.

The sample server (and any server that imports this module) records one span per
request stage: ``(stage, start_ns, end_ns, request, batch, tid)``. Timestamps come from
``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux); every flushed file carries a
bracketed (realtime, monotonic) anchor so the timeline can place the spans on the
Unix-epoch clock (see STYLE.md, "one clock").

Design constraints (issue #2): a span must cost well under 2 µs and nothing at all
that matters when profiling is off. So the buffer is a set of preallocated
``array.array('q')`` columns written by index under one short lock (a full buffer is
spilled to disk by the thread that finds it full), and the disabled recorder is a
separate class whose methods do nothing.

Files are ``.npz`` archives of plain integer/str arrays, read back with
``allow_pickle=False``: a span file is never a vector for code execution.
"""

from __future__ import annotations

import array
import itertools
import json
import os
import threading
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import pandas as pd

from profiler.atomic import atomic_path
from profiler.clock import ClockAnchor, best_anchor
from profiler.timeline import make_events, merge_events


class Stage(IntEnum):
    """The closed stage vocabulary of STYLE.md, as small integers for the buffer."""

    RECEIVE = 0
    DESERIALIZE = 1
    DECODE = 2
    PREPROCESS = 3
    QUEUE = 4
    H2D = 5
    INFERENCE = 6
    D2H = 7
    POSTPROCESS = 8
    SERIALIZE = 9
    MODEL_LOAD = 10
    OTHER = 11

    @property
    def label(self) -> str:
        return self.name.lower()


STAGE_NAMES: tuple[str, ...] = tuple(s.label for s in Stage)
NO_ID = -1
MAX_REQUEST_ID = 128
_COLUMNS = ("stage", "start_ns", "end_ns", "request", "batch", "tid")
_FILE_VERSION = 1


class SpanSink(Protocol):
    """What instrumented code calls. Both recorders below satisfy it."""

    enabled: bool

    def record(
        self, stage: Stage, start_ns: int, end_ns: int, request: str | None = None, batch: int = NO_ID
    ) -> None: ...


class NullRecorder:
    """Profiling off: every call returns at once."""

    enabled = False

    def record(
        self, stage: Stage, start_ns: int, end_ns: int, request: str | None = None, batch: int = NO_ID
    ) -> None:
        return None

    def flush(self) -> Path | None:
        return None

    def close(self) -> None:
        return None


class SpanSwitch:
    """A sink whose target can be swapped while the server runs (``prof attach`` turns spans
    on for a window through the agent). ``record`` *is* the target's bound method, rebound
    on each switch, so the switch adds no call of its own to the hot path."""

    def __init__(self, target: SpanRecorder | NullRecorder | None = None) -> None:
        self.target: SpanRecorder | NullRecorder = NullRecorder()
        self.set(target or NullRecorder())

    @property
    def enabled(self) -> bool:
        return self.target.enabled

    def set(self, target: SpanRecorder | NullRecorder) -> SpanRecorder | NullRecorder:
        """Route spans to ``target``; return the previous target (flush it if you want its spans)."""
        previous, self.target = self.target, target
        self.record = target.record  # type: ignore[method-assign]
        return previous

    def record(
        self, stage: Stage, start_ns: int, end_ns: int, request: str | None = None, batch: int = NO_ID
    ) -> None:  # replaced per instance by the target's method
        self.target.record(stage, start_ns, end_ns, request, batch)

    def flush(self) -> Path | None:
        return self.target.flush()

    def close(self) -> None:
        self.target.close()


class SpanRecorder:
    """Preallocated span buffer that spills to numbered ``.npz`` files in ``out_dir``.

    When the buffer fills, it is written out and reused; ``flush()`` writes what is
    pending. Request ids (strings such as an ``X-Request-ID``, cut to 128 characters) are
    interned to small integers per file; each file carries the ids its spans use.
    """

    enabled = True

    def __init__(self, out_dir: Path | str, capacity: int = 1 << 18, pid: int | None = None):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.pid = os.getpid() if pid is None else pid
        self._cols = {name: array.array("q", bytes(8 * capacity)) for name in _COLUMNS}
        self._stage, self._start, self._end = self._cols["stage"], self._cols["start_ns"], self._cols["end_ns"]
        self._req, self._batch, self._tid = self._cols["request"], self._cols["batch"], self._cols["tid"]
        self._used = 0
        self._lock = threading.Lock()
        self._request_ids: list[str] = []
        self._request_index: dict[str, int] = {}
        self._file_seq = itertools.count()
        self._anchor_start = ClockAnchor.take()

    def record(
        self, stage: Stage, start_ns: int, end_ns: int, request: str | None = None, batch: int = NO_ID
    ) -> None:
        # One uncontended lock (~0.1 µs) keeps a spill from racing a half-written slot, and
        # interning the request id inside it keeps ids and codes in the same file.
        with self._lock:
            i = self._used
            if i == self.capacity:
                self._write(i)
                i = 0
            code = NO_ID
            if request is not None:
                code = self._request_index.get(request, NO_ID)
                if code == NO_ID:
                    code = self._intern(request)
            self._stage[i] = stage
            self._start[i] = start_ns
            self._end[i] = end_ns
            self._req[i] = code
            self._batch[i] = batch
            self._tid[i] = threading.get_native_id()
            self._used = i + 1

    def _intern(self, request: str) -> int:
        request = request[:MAX_REQUEST_ID]
        code = self._request_index.setdefault(request, len(self._request_ids))
        if code == len(self._request_ids):
            self._request_ids.append(request)
        return code

    def flush(self) -> Path | None:
        """Write pending spans (if any) to a new file and return its path."""
        with self._lock:
            if self._used == 0:
                return None
            return self._write(self._used)

    def close(self) -> None:
        self.flush()

    def _write(self, used: int) -> Path:
        anchor_end = ClockAnchor.take()
        columns = {name: np.frombuffer(col, dtype=np.int64, count=used).copy() for name, col in self._cols.items()}
        # Each file carries only the request ids its spans use (codes remapped to them), and the
        # intern table starts afresh: memory and file size stay bounded by the buffer, not by
        # the number of requests ever seen.
        requests = columns["request"]
        used_ids, local = np.unique(requests[requests >= 0], return_inverse=True)
        requests[requests >= 0] = local
        request_ids = np.array([self._request_ids[i] for i in used_ids], dtype=object).astype(str) \
            if len(used_ids) else np.array([], dtype=str)
        self._request_ids, self._request_index = [], {}
        meta = {
            "version": _FILE_VERSION,
            "pid": self.pid,
            "stages": list(STAGE_NAMES),
            "anchors": [_anchor_dict(self._anchor_start), _anchor_dict(anchor_end)],
        }
        self._used = 0
        path = self.out_dir / f"spans-{self.pid}-{next(self._file_seq):05d}.npz"
        with atomic_path(path, suffix=".npz") as tmp:  # a hidden name: never matches the spans-*.npz glob
            np.savez(tmp, meta=np.array(json.dumps(meta)), request_ids=request_ids, **columns)
        return path


def _anchor_dict(anchor: ClockAnchor) -> dict[str, int]:
    return {
        "realtime_ns": anchor.realtime_ns,
        "monotonic_ns": anchor.monotonic_ns,
        "uncertainty_ns": anchor.uncertainty_ns,
    }


@dataclass(frozen=True)
class SpanFile:
    """One span file read back: integer columns plus the tables needed to name them."""

    pid: int
    columns: dict[str, np.ndarray]
    request_ids: np.ndarray
    anchors: tuple[ClockAnchor, ...]

    @property
    def best_anchor(self) -> ClockAnchor:
        return best_anchor(list(self.anchors))

    def __len__(self) -> int:
        return len(self.columns["stage"])


def read_span_file(path: Path | str) -> SpanFile:
    """Read a file written by :class:`SpanRecorder` (never unpickles)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("version") != _FILE_VERSION:
            raise ValueError(f"{path}: unsupported span file version {meta.get('version')!r}")
        columns = {name: data[name] for name in _COLUMNS}
        request_ids = data["request_ids"]
    anchors = tuple(ClockAnchor(**a) for a in meta["anchors"])
    return SpanFile(pid=int(meta["pid"]), columns=columns, request_ids=request_ids, anchors=anchors)


def recorder_from_env(env: dict[str, str] | None = None) -> SpanRecorder | NullRecorder:
    """``PROF_SPANS_DIR=/path`` switches recording on; anything else leaves it off."""
    env = os.environ if env is None else env
    out_dir = env.get("PROF_SPANS_DIR")
    if not out_dir:
        return NullRecorder()
    capacity = int(env.get("PROF_SPANS_CAPACITY", str(1 << 18)))
    return SpanRecorder(out_dir, capacity=capacity)


SOURCE = "stages"


def ingest_span_files(paths: Iterable[Path | str]) -> pd.DataFrame:
    """Span files -> timeline events on the epoch clock (each file with its tightest anchor)."""
    return merge_events(span_file_frames(paths))


def span_file_frames(paths: Iterable[Path | str]) -> list[pd.DataFrame]:
    """One unmerged frame per span file (for callers that merge everything once)."""
    frames = []
    for path in paths:
        spans = read_span_file(path)
        if not len(spans):
            continue
        cols = spans.columns
        offset = spans.best_anchor.offset_ns
        stage_names = pd.Categorical.from_codes(cols["stage"], categories=list(STAGE_NAMES))
        # Request ids are interned by the recorder, so they are unique and the codes are -1 or
        # an index into them: a categorical straight from codes.
        request_ids = pd.Categorical.from_codes(cols["request"], categories=spans.request_ids.tolist())
        frames.append(make_events(
            ts_ns=cols["start_ns"] + offset, source=SOURCE, kind="span", name=stage_names,
            dur_ns=np.maximum(cols["end_ns"] - cols["start_ns"], 0), stage=stage_names, pid=spans.pid,
            tid=cols["tid"], request_id=request_ids, batch_id=cols["batch"]))
    return frames
