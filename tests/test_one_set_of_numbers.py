"""One session opened through every view — the report, the end-of-run summary, the viewer's data
and ``prof diff`` — gives the same request, stage and hotspot figures, because each reads the
measures layer (directly or through the saved report). A deterministic generated session: no
server is started."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

from profiler.analysis.diagnose import diagnose
from profiler.cli.common import event_counts
from profiler.cli.tui import DirectorySource
from profiler.diff import diff_figures, session_figures
from profiler.measures import Measures
from profiler.report_store import current_report, save_report
from profiler.session import load
from profiler.summary import print_summary
from tests.tui_session import REQUESTS, make_tui_session


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    path = make_tui_session(tmp_path_factory.mktemp("numbers") / "session")
    save_report(path, diagnose(load(path)))
    return path


def _rows(hotspots) -> list[tuple]:
    return [(h.source, h.kind, h.name, round(h.share, 9), round(h.total_ms, 6)) for h in hotspots]


def test_report_summary_viewer_and_diff_show_the_same_figures(session_dir) -> None:
    session = load(session_dir)
    report = diagnose(session)
    assert report.load["requests"] == REQUESTS and report.load["source"] == "loadgen"

    # the saved report (what prof tui and prof diff read) is the same diagnosis
    saved = current_report(session_dir)
    assert saved.load == report.load and _rows(saved.hotspots) == _rows(report.hotspots)
    assert [vars(s) for s in saved.stages] == [vars(s) for s in report.stages]

    # prof diff's figures
    figures = session_figures(session_dir)
    assert figures.load == report.load and _rows(figures.hotspots) == _rows(report.hotspots)
    assert [vars(s) for s in figures.stages] == [vars(s) for s in report.stages]
    same = diff_figures(figures, figures)
    assert same.stages["delta ms"].abs().max() == 0 and same.hotspots["delta"].abs().max() == 0

    # the viewer's data: its hotspot table is the report's rows, request latencies the measures'
    source = DirectorySource(session_dir)
    data = source.data(source.report())
    table = data.hotspots.sort_values(["source", "kind", "name"]).reset_index(drop=True)
    expected = pd.DataFrame([vars(h) for h in report.hotspots]).sort_values(["source", "kind", "name"])
    assert table["name"].tolist() == expected["name"].tolist()
    assert table["share"].to_numpy() == pytest.approx(expected["share"].to_numpy())
    _, measured = Measures(session.timeline, session.stacks, session.meta).request_table
    latencies = data.requests.table.set_index("request_id")["latency_ms"]
    assert latencies.loc[measured["request_id"].astype(str)].to_numpy() == pytest.approx(
        measured["latency_ms"].to_numpy())
    assert sorted(latencies.to_numpy()) == pytest.approx(sorted(report_latencies(session)))

    # the summary prints the report's figures
    out = io.StringIO()
    print_summary(report, session.meta, event_counts(session), Console(file=out, width=250), session_dir)
    text = out.getvalue()
    assert f"{report.load['throughput_rps']} req/s" in text
    assert f"p50/p95/p99 {report.load['p50_ms']:.1f}/" in text
    for row in (s for s in report.stages if s.share is not None):
        assert f"{row.share:6.1%}".strip() in text


def report_latencies(session) -> list[float]:
    figures = Measures(session.timeline, session.stacks, session.meta).requests
    return list(figures.latency_ms)


def test_stage_shares_of_busy_time_add_up_and_waits_stand_apart(session_dir) -> None:
    report = diagnose(load(session_dir))
    work = [s for s in report.stages if s.kind == "work"]
    waits = [s for s in report.stages if s.kind == "wait"]
    assert sum(s.share for s in work) == pytest.approx(1.0)
    assert [s.stage for s in waits] == ["queue"] and waits[0].share is None
    for group in ({h.basis for h in report.hotspots if h.source == "pyspy" and h.kind == "function"},
                  {h.basis for h in report.hotspots if h.kind == "ort-node"}):
        assert len(group) == 1
    nodes = [h for h in report.hotspots if h.kind == "ort-node"]
    assert sum(h.share for h in nodes) == pytest.approx(1.0)
    functions = [h for h in report.hotspots if h.source == "pyspy" and h.kind == "function"]
    assert len({h.name for h in functions}) == len(functions)  # no row twice
    assert not any("select" in h.name for h in functions)  # idle frames are waits, not hotspots
