"""The stage breakdown, the one definition: where the server's busy thread time goes, stage by
stage, and where its threads wait.

Two bases, the first that has data:

- **stage spans**, the server's own (the sample server, or any server running the agent):
  spans of the measured window; model loading done before the first served request is start-up,
  not serving, and is left out, while loads during serving stay (so a reload per request shows);
  ``queue`` is waiting, not work.
- **py-spy attribution**: each busy sample's stage from its stack (:mod:`profiler.analysis.
  attribution`); ``send`` (writing the response out) is part of ``serialize``; ``idle`` samples
  are threads waiting (for work, a lock, the socket).

Work rows are shares of *busy thread time* — the summed time of every thread's (or request's)
work, so concurrent threads add up and the column sums to 100 %. Beside each share: the time per
request and the mean number of threads in that stage at once (its time over the window: the
wall-time view). Waiting rows are not in the shares; they say where the threads wait. The
``other`` row names its top functions and lines, so the largest bucket is never unexplained.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.analysis.attribution import IDLE, as_stage
from profiler.analysis.model import StageRow
from profiler.measures.frames import FrameLabels
from profiler.timeline import StackTable

WAIT_STAGES = ("queue",)  # stage spans of waiting, not work
WAIT_LABELS = (IDLE,)  # attribution labels of waiting
WHERE_TOP = 4


def served_spans(stage_spans: pd.DataFrame) -> pd.DataFrame:
    """Stage spans without the model loading done before the first served request."""
    stage, ts = stage_spans["stage"], stage_spans["ts_ns"].to_numpy()
    keep = stage.notna().to_numpy().copy()  # pandas may hand out a read-only view
    serving = keep & (stage != "model_load").to_numpy()
    if serving.any():
        keep &= serving | (ts >= ts[serving].min())
    return stage_spans[keep]


def from_spans(spans: pd.DataFrame, requests: int, window_ns: float) -> list[StageRow]:
    """Stage figures of the server's own spans."""
    if spans.empty:
        return []
    grouped = spans.groupby("stage", observed=True)["dur_ns"]
    sums, counts = grouped.sum().astype(float), grouped.size()
    quantiles = {q: grouped.quantile(q / 100) for q in (50, 95, 99)}
    busy = float(sums.drop(list(WAIT_STAGES), errors="ignore").sum())
    rows = []
    for stage, ns in sums.items():
        wait = stage in WAIT_STAGES
        rows.append(StageRow(str(stage), "wait" if wait else "work", None if wait else _share(ns, busy),
                                 ns / 1e6, ns / requests / 1e6 if requests else None, _threads(ns, window_ns),
                                 *(float(quantiles[q][stage]) / 1e6 for q in (50, 95, 99)), int(counts[stage]),
                                 "stage spans", []))
    return _ordered(rows)


def from_samples(samples: pd.DataFrame, stacks: StackTable, labels: FrameLabels, requests: int,
                 window_ns: float) -> list[StageRow]:
    """Stage figures of py-spy samples carrying an ``attributed`` label."""
    if samples.empty:
        return []
    stages = samples["attributed"].map(as_stage).astype(str).to_numpy()
    durations = samples["dur_ns"].to_numpy(np.float64)
    sums = pd.Series(durations).groupby(stages).sum()
    waits = [s for s in sums.index if s in WAIT_LABELS]
    busy = float(sums.drop(waits).sum())
    rows = []
    for stage, ns in sums.items():
        wait = stage in WAIT_LABELS
        mine = stages == stage
        where = labels.where(samples[mine], WHERE_TOP, wait) if wait or stage == "other" else []
        rows.append(StageRow(str(stage), "wait" if wait else "work", None if wait else _share(ns, busy),
                                 float(ns) / 1e6, float(ns) / requests / 1e6 if requests else None,
                                 _threads(float(ns), window_ns), None, None, None, int(mine.sum()),
                                 "py-spy attribution", where))
    return _ordered(rows)


def _share(ns: float, busy: float) -> float:
    return float(ns) / busy if busy > 0 else 0.0


def _threads(ns: float, window_ns: float) -> float | None:
    return float(ns) / window_ns if window_ns > 0 else None


def _ordered(rows: list[StageRow]) -> list[StageRow]:
    """Work by share, largest first; then the waits, longest first."""
    return sorted(rows, key=lambda r: (r.kind == "wait", -(r.share or 0.0), -r.total_ms))
