"""How many threads do a thing at once, and where threads park: the evidence of a queue a
server never named (a lock around the model, a one-thread executor, an event loop running
blocking work).

py-spy samples are run-length rows per thread (``ts_ns``, ``dur_ns``): the time a thread spent
in one stack. Laid over each other they give, for any label, the fraction of a window during
which at least 1, 2, 3 … threads carried it — a serialized resource reads ≥ 1 most of the
time and ≥ 2 almost never, however many threads would like to use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler.measures.frames import short_path
from profiler.timeline import StackTable

# Library calls below the server's own code that wait for *work* or for a socket, not for a
# place in a queue: accept/select loops, reading a connection (the next request, or a
# downstream service's answer), a pool worker with an empty queue, an event loop.
WAITING_FOR_WORK = re.compile(
    r"^(?:.*\.)?(select|poll|accept|serve_forever|readinto|readline|recv|recv_into|_worker|run_forever|"
    r"_run_once|worker_thread|get_request)$")
LIBRARY = re.compile(r"/(lib/python\d[\d.]*|site-packages|dist-packages)/|^<")


@dataclass(frozen=True)
class Overlap:
    """The fraction of a window during which at least one / at least two threads carried a
    label, and the mean number carrying it."""

    at_least_one: float
    at_least_two: float
    mean: float


def overlap(samples: pd.DataFrame, start: int, end: int) -> Overlap:
    """Sweep over these samples' intervals, clipped to [start, end)."""
    window = float(end - start)
    if samples.empty or window <= 0:
        return Overlap(0.0, 0.0, 0.0)
    begin = np.clip(samples["ts_ns"].to_numpy(np.int64), start, end)
    finish = np.clip(begin + samples["dur_ns"].to_numpy(np.int64), start, end)
    times = np.concatenate([begin, finish])
    steps = np.concatenate([np.ones(len(begin)), -np.ones(len(finish))])
    order = np.lexsort((steps, times))  # at one instant, ends before starts
    times, level = times[order], np.cumsum(steps[order])
    span = np.diff(times, append=times[-1]).astype(float)
    return Overlap(float(span[level >= 1].sum() / window), float(span[level >= 2].sum() / window),
                   float((level * span).sum() / window))


@dataclass(frozen=True)
class Parked:
    """Threads waiting at one line of the server's own code, inside a request."""

    where: str  # "function (dir/file.py:line)"
    threads_mean: float  # threads parked there at once, over the window
    share_of_waits: float  # of all waiting inside requests


def parked(waits: pd.DataFrame, stacks: StackTable, start: int, end: int) -> list[Parked]:
    """Waiting samples grouped by the innermost frame of the server's own code (not the standard
    library, not an installed package), leaving out those whose library calls below it wait for
    work or a socket (:data:`WAITING_FOR_WORK`). Largest first."""
    window_ns = float(end - start)
    waits = waits[waits["stack_id"] >= 0]
    if waits.empty or window_ns <= 0:
        return []
    begin = np.clip(waits["ts_ns"].to_numpy(np.int64), start, end)
    clipped = np.clip(begin + waits["dur_ns"].to_numpy(np.int64), start, end) - begin
    per_stack = pd.Series(clipped, index=waits.index).groupby(waits["stack_id"].to_numpy()).sum()
    places: dict[str, float] = {}
    for stack_id, ns in per_stack.items():
        frames = stacks.frames_of(int(stack_id))
        depth = next((i for i in range(len(frames) - 1, -1, -1) if not LIBRARY.search(frames[i][1])), None)
        if depth is None or any(WAITING_FOR_WORK.match(function) for function, _, _ in frames[depth + 1:]):
            continue
        own = frames[depth]
        where = f"{own[0]} ({short_path(own[1])}:{own[2]})"
        places[where] = places.get(where, 0.0) + float(ns)
    total = sum(places.values())
    return [Parked(where, ns / window_ns, ns / total) for where, ns in sorted(places.items(), key=lambda kv: -kv[1])]


def under(samples: pd.DataFrame, stacks: StackTable, frame: re.Pattern) -> np.ndarray:
    """Which samples have a frame whose ``file:function`` matches ``frame`` anywhere in their
    stack (each stack judged once)."""
    verdicts: dict[int, bool] = {}
    out = np.zeros(len(samples), dtype=bool)
    for i, stack_id in enumerate(samples["stack_id"].to_numpy()):
        stack_id = int(stack_id)
        if stack_id not in verdicts:
            verdicts[stack_id] = stack_id >= 0 and any(
                frame.search(f"{path}:{function}") for function, path, _ in stacks.frames_of(stack_id))
        out[i] = verdicts[stack_id]
    return out


def clipped_ns(samples: pd.DataFrame, start: int, end: int) -> float:
    """The samples' time inside [start, end)."""
    begin = np.clip(samples["ts_ns"].to_numpy(np.int64), start, end)
    return float((np.clip(begin + samples["dur_ns"].to_numpy(np.int64), start, end) - begin).sum())


def collector_share(spans: pd.DataFrame, start: int, end: int) -> tuple[int, float] | None:
    """(native samples, share of the watched time inside the garbage collector) of the gc
    watch's spans (``native-watch`` coverage, ``<gc>`` stretches) clipped to [start, end);
    None without the watch or with fewer than three samples."""
    if spans.empty:
        return None
    lo = np.maximum(spans["ts_ns"].to_numpy(np.int64), start)
    hi = np.minimum((spans["ts_ns"] + spans["dur_ns"]).to_numpy(np.int64), end)
    clipped = np.clip(hi - lo, 0, None).astype(float)
    names = spans["name"].astype(str).to_numpy()
    watch = names == "native-watch"
    if not watch.any():
        return None
    covered_ns = float(clipped[watch].sum())
    rates = spans.loc[watch, "value"].to_numpy(float) / np.maximum(spans.loc[watch, "dur_ns"].to_numpy(float), 1.0)
    taken = int(round(float((clipped[watch] * rates).sum())))
    if taken < 3 or covered_ns <= 0:
        return None
    # one collector per process runs at a time (it holds the GIL): its stretches do not overlap
    return taken, min(float(clipped[names == "<gc>"].sum()) / covered_ns, 1.0)
