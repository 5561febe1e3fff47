"""Timeline lanes for the TUI: one per (source, process, thread) for spans and samples, one per
counter, each drawable into any window at any width in time independent of the number of
events in the window.

A span lane keeps, for each name it contains, the sorted starts and ends and their running
sums. The time that name covers up to instant ``t`` is then
``Σ_{s<t}(t - s) - Σ_{e<t}(t - e)``, two binary searches per column edge — so a column's share
of each name is exact at any zoom, and a million events draw as fast as ten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

LaneKind = Literal["spans", "counter"]
SPAN_SOURCES_ORDER = ("loadgen", "http", "stages", "ort", "torch", "pyspy")


@dataclass
class _Coverage:
    starts: np.ndarray  # sorted, relative to the lane origin
    start_sums: np.ndarray  # running sums with a leading 0
    ends: np.ndarray
    end_sums: np.ndarray

    @classmethod
    def of(cls, starts: np.ndarray, ends: np.ndarray) -> _Coverage:
        s = np.sort(starts)
        e = np.sort(ends)
        return cls(s, np.concatenate(([0], np.cumsum(s))), e, np.concatenate(([0], np.cumsum(e))))

    def covered_until(self, edges: np.ndarray) -> np.ndarray:
        """Total time covered before each edge (edges relative to the lane origin)."""
        ns = np.searchsorted(self.starts, edges)
        ne = np.searchsorted(self.ends, edges)
        return (ns * edges - self.start_sums[ns]) - (ne * edges - self.end_sums[ne])


@dataclass
class Lane:
    """One row of the timeline view."""

    label: str
    source: str
    kind: LaneKind
    pid: int
    tid: int
    origin: int  # ns; every array below is relative to it
    names: list[str] = field(default_factory=list)
    # spans: events sorted by start, for "what runs at this instant"
    starts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ends: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    codes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    max_dur: int = 0
    coverage: list[_Coverage] = field(default_factory=list)
    # counters: readings sorted by time
    values: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))

    def columns(self, t0: int, t1: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Span lane: per column, the name covering most of it (-1: nothing) and how busy
        it is (covered time / column time; above 1 where spans overlap)."""
        edges = np.linspace(t0 - self.origin, t1 - self.origin, width + 1).astype(np.int64)
        widths = np.maximum(np.diff(edges), 1)
        if not self.coverage:
            return np.full(width, -1), np.zeros(width)
        per_name = np.stack([np.diff(c.covered_until(edges)) for c in self.coverage])
        best = per_name.argmax(axis=0)
        busy = per_name.sum(axis=0) / widths
        return np.where(per_name.max(axis=0) > 0, best, -1), busy

    def counter_columns(self, t0: int, t1: int, width: int) -> np.ndarray:
        """Counter lane: the mean reading in each column (NaN where none, carried forward)."""
        edges = np.linspace(t0 - self.origin, t1 - self.origin, width + 1).astype(np.int64)
        idx = np.searchsorted(self.starts, edges)
        sums = np.concatenate(([0.0], np.cumsum(self.values)))
        counts = np.diff(idx)
        means = np.full(width, np.nan)
        has = counts > 0
        means[has] = (sums[idx[1:]] - sums[idx[:-1]])[has] / counts[has]
        # a reading holds until the next one: a column between two readings shows the last
        before = idx[:-1] - 1
        carry = ~has & (before >= 0)
        means[carry] = self.values[before[carry]]
        return means

    def at(self, t: int) -> list[tuple[str, int, int]]:
        """Spans running at instant ``t``: (name, start ns, duration ns), longest first."""
        rel = t - self.origin
        lo = np.searchsorted(self.starts, rel - self.max_dur, side="left")
        hi = np.searchsorted(self.starts, rel, side="right")
        hit = np.nonzero(self.ends[lo:hi] > rel)[0] + lo
        order = hit[np.argsort(self.starts[hit] - self.ends[hit], kind="stable")]
        return [(self.names[self.codes[i]], int(self.starts[i] + self.origin), int(self.ends[i] - self.starts[i]))
                for i in order]

    def value_at(self, t: int) -> float | None:
        i = np.searchsorted(self.starts, t - self.origin, side="right") - 1
        return float(self.values[i]) if i >= 0 and len(self.values) else None


def build_lanes(events: pd.DataFrame, sample_labels: np.ndarray | None = None,
                thread_names: dict[int, str] | None = None) -> list[Lane]:
    """Lanes of a timeline: span and sample lanes by source then process/thread, then the
    counters. ``sample_labels`` names each py-spy sample (its attributed stage) in the order
    the samples appear in ``events``; without it a sample is labelled by its leaf function."""
    if events.empty:
        return []
    origin = int(events["ts_ns"].min())
    lanes: list[Lane] = []
    spans = events[events["kind"] == "span"]
    for (source, pid, tid), group in _groups(spans):
        lanes.append(_span_lane(f"{source} {_thread(tid, pid, thread_names)}", source, pid, tid, origin,
                                group["ts_ns"].to_numpy(), group["dur_ns"].to_numpy(), group["name"]))
    samples = events[events["kind"] == "sample"]
    if len(samples):
        labels = pd.Series(np.asarray(sample_labels, dtype=object) if sample_labels is not None
                           else samples["name"].astype(str).to_numpy())
        step = sample_step_ns(samples)
        for (source, pid, tid), group in _groups(samples):
            where = samples.index.get_indexer(group.index)
            # a sample row is a stretch of unchanged stack: its own duration, at least one sampling step
            durations = np.maximum(group["dur_ns"].to_numpy(), step)
            lanes.append(_span_lane(f"{source} {_thread(tid, pid, thread_names)}", source, pid, tid, origin,
                                    group["ts_ns"].to_numpy(), durations, labels.iloc[where]))
    lanes.sort(key=lambda lane: (_source_rank(lane.source), lane.pid, lane.tid))
    counters = events[events["kind"] == "counter"]
    for (source, name, pid, tid), group in counters.groupby(["source", "name", "pid", "tid"], observed=True,
                                                          sort=True):
        # per-thread counters lead with the thread, so a narrow label column still tells them apart
        label = str(name) if tid < 0 else f"{_thread(tid, pid, thread_names)} {str(name).removeprefix('thread_')}"
        order = np.argsort(group["ts_ns"].to_numpy(), kind="stable")
        lanes.append(Lane(label=label, source=str(source), kind="counter", pid=int(pid), tid=int(tid), origin=origin,
                          names=[str(name)], starts=group["ts_ns"].to_numpy()[order] - origin,
                          values=group["value"].to_numpy(dtype=np.float64)[order]))
    return lanes


def _groups(frame: pd.DataFrame):
    return frame.groupby(["source", "pid", "tid"], observed=True, sort=True)


def _source_rank(source: str) -> int:
    return SPAN_SOURCES_ORDER.index(source) if source in SPAN_SOURCES_ORDER else len(SPAN_SOURCES_ORDER)


def _thread(tid: int, pid: int, thread_names: dict[int, str] | None) -> str:
    if thread_names and tid in thread_names:
        return thread_names[tid]
    if pid < -1:
        return f"gpu{-100 - pid} s{tid}"
    return f"t{tid}" if tid >= 0 else f"p{pid}"


def sample_step_ns(samples: pd.DataFrame) -> int:
    """How long one sample stands for: the typical gap between a thread's samples."""
    gaps = samples.groupby(["pid", "tid"], observed=True)["ts_ns"].diff().dropna()
    gaps = gaps[gaps > 0]
    return int(gaps.median()) if len(gaps) else 10_000_000


def _span_lane(label: str, source: str, pid: int, tid: int, origin: int, ts: np.ndarray, dur: np.ndarray,
               names: pd.Series) -> Lane:
    order = np.argsort(ts, kind="stable")
    starts = ts[order].astype(np.int64) - origin
    ends = starts + dur[order].astype(np.int64)
    codes, labels = pd.factorize(names.iloc[order], sort=True)  # hashing, not sorting strings
    labels = [str(n) for n in labels]
    codes = codes.astype(np.int32)
    by_code = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by_code], np.arange(len(labels) + 1))
    coverage = [_Coverage.of(starts[by_code[a:b]], ends[by_code[a:b]]) for a, b in zip(bounds[:-1], bounds[1:])]
    return Lane(label=label, source=source, kind="spans", pid=int(pid), tid=int(tid), origin=origin,
                names=[str(n) for n in labels], starts=starts, ends=ends, codes=codes,
                max_dur=int((ends - starts).max()) if len(starts) else 0, coverage=coverage)
