"""Two sessions side by side: load figures, per-stage times, hotspot shares (B against A)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from rich.console import Console
from rich.table import Table

from profiler.session import Session
from profiler.summary import stage_table, summarize


@dataclass
class Diff:
    load: list[tuple[str, float | None, float | None]]  # figure, A, B
    stages: pd.DataFrame  # stage -> A/B mean ms, delta
    hotspots: pd.DataFrame  # (source, name) -> A/B share of that source's time, delta in points


def hotspot_shares(session: Session) -> pd.DataFrame:
    """Share of each source's own time per name: py-spy leaf functions, ORT op types, torch ops
    and kernels. Shares, not times, so sessions of different lengths compare."""
    tl = session.timeline
    rows = []
    samples = tl[(tl["source"] == "pyspy") & (tl["kind"] == "sample")]
    if len(samples):
        rows.append(_shares(samples.groupby("name", observed=True)["dur_ns"].sum(), "pyspy"))
    nodes = tl[(tl["source"] == "ort") & tl["args"].str.contains('"cat":"Node"', regex=False).fillna(False)]
    if len(nodes):
        ops = nodes["args"].str.extract(r'"op":"([^"]+)"')[0].fillna("?")
        rows.append(_shares(nodes["dur_ns"].groupby(ops.to_numpy()).sum(), "ort op"))
    torch = tl[(tl["source"] == "torch") & (tl["kind"] == "span")]
    if len(torch):
        rows.append(_shares(torch.groupby("name", observed=True)["dur_ns"].sum(), "torch"))
    if not rows:
        return pd.DataFrame(columns=["source", "name", "share"])
    return pd.concat(rows, ignore_index=True)


def _shares(totals: pd.Series, source: str) -> pd.DataFrame:
    whole = float(totals.sum()) or 1.0
    return pd.DataFrame({"source": source, "name": totals.index.astype(str), "share": totals.to_numpy() / whole})


def diff_sessions(a: Session, b: Session, top: int = 15) -> Diff:
    sa, sb = summarize(a), summarize(b)
    load = [("throughput req/s", sa.throughput_rps, sb.throughput_rps)]
    load += [(f"latency {q} ms", sa.latency_ms.get(q), sb.latency_ms.get(q)) for q in ("p50", "p95", "p99")]
    ta, tb = stage_table(a), stage_table(b)
    stages = pd.DataFrame({"A mean ms": ta["mean_ms"], "B mean ms": tb["mean_ms"]})
    stages["delta ms"] = stages["B mean ms"] - stages["A mean ms"]
    stages = stages.sort_values("delta ms", key=lambda s: -s.abs().fillna(0))
    ha, hb = hotspot_shares(a), hotspot_shares(b)
    merged = ha.merge(hb, on=["source", "name"], how="outer", suffixes=(" A", " B")).fillna({"share A": 0.0,
                                                                                            "share B": 0.0})
    merged["delta"] = merged["share B"] - merged["share A"]
    merged = merged.reindex(merged["delta"].abs().sort_values(ascending=False).index).head(top)
    return Diff(load, stages, merged.reset_index(drop=True))


def print_diff(diff: Diff, console: Console, name_a: object, name_b: object) -> None:
    console.print(f"A = {name_a}\nB = {name_b}")
    table = Table(title="load (client side)", show_edge=False, title_justify="left")
    for column in ("figure", "A", "B", "change"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for figure, va, vb in diff.load:
        change = f"{(vb - va) / va:+.1%}" if va and vb is not None else ""
        table.add_row(figure, _num(va), _num(vb), change)
    console.print(table)
    if len(diff.stages):
        table = Table(title="stages (mean per span)", show_edge=False, title_justify="left")
        for column in ("stage", "A ms", "B ms", "delta ms"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for stage, row in diff.stages.iterrows():
            table.add_row(str(stage), _num(row["A mean ms"]), _num(row["B mean ms"]), _num(row["delta ms"], "+.2f"))
        console.print(table)
    if len(diff.hotspots):
        table = Table(title="hotspots (share of their source's time; biggest changes first)", show_edge=False,
                      title_justify="left")
        for column in ("source", "name", "A", "B", "delta"):
            table.add_column(column, justify="left" if column in ("source", "name") else "right")
        for _, row in diff.hotspots.iterrows():
            table.add_row(row["source"], row["name"][:60], f"{row['share A']:.1%}", f"{row['share B']:.1%}",
                          f"{row['delta'] * 100:+.1f} pt")
        console.print(table)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "" if value is None or pd.isna(value) else format(value, fmt)
