"""Two sessions side by side, B against A: the requests, the stage breakdown (time per request,
so a stage that appears — a model reload — shows as a regression) and the hotspots (shares of
their source's named denominator). Every figure is the measures layer's, read from each
session's current report or computed the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from profiler.analysis.diagnose import measures_of
from profiler.analysis.model import Hotspot, StageRow
from profiler.report_store import current_report
from profiler.session import load

LOAD_FIGURES = (("throughput req/s", "throughput_rps"), ("latency p50 ms", "p50_ms"), ("latency p95 ms", "p95_ms"),
                ("latency p99 ms", "p99_ms"), ("in flight", "in_flight_mean"))


@dataclass
class SessionFigures:
    load: dict[str, Any]
    stages: list[StageRow]
    hotspots: list[Hotspot]


@dataclass
class Diff:
    load: list[tuple[str, float | None, float | None]]  # figure, A, B
    stages: pd.DataFrame  # stage -> A/B ms per request, delta, A/B busy share
    hotspots: pd.DataFrame  # (source, kind, name, basis) -> A/B share, delta in points


def session_figures(path: Path) -> SessionFigures:
    """The figures of a session: its saved report's when current, else measured now."""
    report = current_report(path)
    if report is not None:
        return SessionFigures(report.load, report.stages, report.hotspots)
    figures = measures_of(load(path)).figures()
    return SessionFigures(figures.load, figures.stages, figures.hotspots)


def diff_figures(a: SessionFigures, b: SessionFigures, top: int = 15) -> Diff:
    load = [(label, a.load.get(key), b.load.get(key)) for label, key in LOAD_FIGURES]
    stages = pd.DataFrame({"A ms/request": _by_stage(a.stages, "per_request_ms"),
                           "B ms/request": _by_stage(b.stages, "per_request_ms"),
                           "A share": _by_stage(a.stages, "share"), "B share": _by_stage(b.stages, "share")})
    stages["delta ms"] = stages["B ms/request"].fillna(0) - stages["A ms/request"].fillna(0)
    stages = stages.sort_values("delta ms", key=lambda s: -s.abs())
    keys = ["source", "kind", "name", "basis"]
    merged = _hotspots(a.hotspots).merge(_hotspots(b.hotspots), on=keys, how="outer", suffixes=(" A", " B"))
    merged = merged.fillna({"share A": 0.0, "share B": 0.0})
    merged["delta"] = merged["share B"] - merged["share A"]
    merged = merged.reindex(merged["delta"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    return Diff(load, stages, merged.reset_index(drop=True))


def _by_stage(rows: list[StageRow], field: str) -> pd.Series:
    return pd.Series({r.stage: getattr(r, field) for r in rows}, dtype=float)


def _hotspots(rows: list[Hotspot]) -> pd.DataFrame:
    kept = [h for h in rows if h.kind != "counter"]
    return pd.DataFrame({"source": [h.source for h in kept], "kind": [h.kind for h in kept],
                         "name": [h.name for h in kept], "basis": [h.basis for h in kept],
                         "share": [h.share for h in kept]}, columns=["source", "kind", "name", "basis", "share"])


def print_diff(diff: Diff, console: Console, name_a: object, name_b: object) -> None:
    console.print(f"A = {name_a}\nB = {name_b}")
    table = Table(title="requests", show_edge=False, title_justify="left")
    for column in ("figure", "A", "B", "change"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for figure, va, vb in diff.load:
        change = f"{(vb - va) / va:+.1%}" if va and vb is not None else ""
        table.add_row(figure, _num(va), _num(vb), change)
    console.print(table)
    if len(diff.stages):
        table = Table(title="stages: time per request (and share of busy thread time)", show_edge=False,
                      title_justify="left")
        for column in ("stage", "A ms", "B ms", "delta ms", "A share", "B share"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for stage, row in diff.stages.iterrows():
            table.add_row(str(stage), _num(row["A ms/request"]), _num(row["B ms/request"]),
                          _num(row["delta ms"], "+.2f"), _pct(row["A share"]), _pct(row["B share"]))
        console.print(table)
    if len(diff.hotspots):
        table = Table(title="hotspots: share of their source's named denominator, biggest changes first",
                      show_edge=False, title_justify="left")
        for column in ("source", "name", "share of", "A", "B", "delta"):
            table.add_column(column, justify="left" if column in ("source", "name", "share of") else "right")
        for _, row in diff.hotspots.iterrows():
            table.add_row(f"{row['source']} {row['kind']}", row["name"][:60], row["basis"], f"{row['share A']:.1%}",
                          f"{row['share B']:.1%}", f"{row['delta'] * 100:+.1f} pt")
        console.print(table)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "" if value is None or pd.isna(value) else format(value, fmt)


def _pct(value: float | None) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.1%}"
