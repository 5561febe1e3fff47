"""The viewer driven as a person would, with keys, on a deterministic generated session:
findings first, drill-down to the events behind a finding, sorting and filtering, zoom and
pan, stage and window filters on the stacks, export, help, and failure on a broken session."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from textual.events import MouseScrollUp

from profiler.cli.tui import DirectorySource
from profiler.report_store import current_report as cached_report
from tests.chrome_trace_validator import validate_chrome_trace
from tests.tui_session import make_tui_session
from tui.app import ProfApp
from tui.views.findings import FindingScreen
from tui.views.help import HelpScreen
from tui.views.hotspots import HotspotsView
from tui.views.stacks import StacksView
from tui.views.timeline import TimelineCanvas, TimelineView

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

SIZE = (100, 32)


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    return make_tui_session(tmp_path / "demo")


def screen_text(app: ProfApp) -> str:
    """What the terminal shows, as text (from the SVG screenshot, tags dropped)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def _ready(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@contextlib.asynccontextmanager
async def opened(session_dir: Path):
    """The viewer on ``session_dir``, headless, once the report and the view data are in."""
    app = ProfApp(DirectorySource(session_dir, calibrate="off"))
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        yield app, pilot


@pytest.mark.asyncio
async def test_opens_on_the_findings_with_the_bottleneck_named(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        assert app.current_view == "findings"
        findings = app.report.findings
        assert findings and findings[0].rule == "batching-opportunity"
        table = app.query_one("#findings-table")
        assert table.row_count == len(findings)
        shown = screen_text(app)
        assert findings[0].rule in shown and findings[0].fix.summary[:40] in shown
    assert cached_report(session_dir) is not None  # the next opening skips the diagnosis


@pytest.mark.asyncio
async def test_enter_opens_the_evidence_and_t_jumps_to_the_events(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FindingScreen)
        finding = app.screen.finding
        body = screen_text(app)
        for key in finding.evidence:
            assert key in body
        assert finding.fix.summary in body
        await pilot.press("t")
        await pilot.pause()
        assert not isinstance(app.screen, FindingScreen) and app.current_view == "timeline"
        canvas = app.query_one(TimelineCanvas)
        ref = finding.events[0]
        lane = canvas.lanes[canvas.lane_index]
        assert canvas.highlight_source == ref.source == lane.source
        assert set(ref.stages) & set(lane.names)


@pytest.mark.asyncio
async def test_a_finding_leads_to_its_hotspot_rows_and_its_stage_stacks(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("enter", "h")
        await pilot.pause()
        assert app.current_view == "hotspots"
        shown = app.query_one(HotspotsView).shown
        assert len(shown) >= 1 and set(shown["name"]) == {"inference"} and set(shown["source"]) == {"stages"}
        await pilot.press("1", "enter", "s")
        await pilot.pause()
        stacks = app.query_one(StacksView)
        assert app.current_view == "stacks" and stacks.stage == "inference"
        assert 0 < stacks.calltree.samples < len(stacks.calltree.stack_ids)


@pytest.mark.asyncio
async def test_hotspots_sort_filter_and_switch_source(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("2")
        view = app.query_one(HotspotsView)
        totals = view.shown["total_ms"].to_numpy()
        assert len(totals) > 5 and np.all(np.diff(totals) <= 0)
        await pilot.press("o")  # sort by self time
        selfs = view.shown["self_ms"].fillna(-1).to_numpy()
        assert view.sort_column == "self_ms" and np.all(np.diff(selfs) <= 0)
        await pilot.press("r")
        assert np.all(np.diff(view.shown["self_ms"].fillna(-1).to_numpy()) >= 0)
        assert "ort" in view.sources
        while view.source != "ort":
            await pilot.press("s")
        assert set(view.shown["source"]) == {"ort"}
        await pilot.press("slash", *"conv", "enter")
        await pilot.pause()
        assert set(view.shown["name"]) == {"conv1_kernel_time", "conv2_kernel_time", "Conv"}
        # the rows are the report's: ORT nodes as shares of ORT node time, adding up to the whole
        await pilot.press("escape")
        nodes = view.table[(view.table["source"] == "ort") & (view.table["kind"] == "ort-node")]
        assert nodes["share"].sum() == pytest.approx(1.0) and set(nodes["basis"]) == {"ORT node time"}
        assert "model_run" not in set(nodes["name"])  # the session span is not a node


@pytest.mark.asyncio
async def test_timeline_zoom_pan_cursor_and_mark(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("4")
        await pilot.pause()
        canvas = app.query_one(TimelineCanvas)
        full = canvas.window
        assert full == canvas.bounds
        await pilot.press("plus")
        zoomed = canvas.window
        assert (zoomed[1] - zoomed[0]) == pytest.approx((full[1] - full[0]) / 2, rel=0.01)
        await pilot.press("l")
        assert canvas.window[0] > zoomed[0]
        before = app.query_one(TimelineView).readout().plain
        await pilot.press("right", "right", "right")
        await pilot.pause()
        assert app.query_one(TimelineView).readout().plain != before
        await pilot.press("m", *["right"] * 8, "m")
        await pilot.pause()
        start, end = canvas.selection
        assert start < end
        assert app.query_one(StacksView).window == (start, end)  # the stacks follow the mark
        await pilot.press("z")
        assert canvas.window[0] <= start and canvas.window[1] >= end
        assert canvas.window[1] - canvas.window[0] < (zoomed[1] - zoomed[0])
        await pilot.press("0")
        assert canvas.window == full


@pytest.mark.asyncio
async def test_cursor_readout_names_what_runs_there(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("4")
        await pilot.pause()
        canvas = app.query_one(TimelineCanvas)
        ort = next(i for i, lane in enumerate(canvas.lanes) if lane.source == "ort")
        await pilot.press(*["down"] * ort)
        lane = canvas.lanes[canvas.lane_index]
        first = int(lane.starts[0] + lane.origin)
        canvas.window = (first - 1_000_000, first + 19_000_000)  # the first model run fills the view
        canvas.cursor = canvas.cells // 2
        await pilot.pause()
        readout = app.query_one(TimelineView).readout().plain
        assert "model_run 20.0 ms" in readout or "model_run 20 ms" in readout


@pytest.mark.asyncio
async def test_stacks_filter_by_stage_and_by_marked_window(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("5")
        await pilot.pause()
        stacks = app.query_one(StacksView)
        everything = stacks.calltree.samples
        assert everything == 1200
        await pilot.press("g")
        assert stacks.stage is not None and stacks.calltree.samples < everything
        while stacks.stage is not None:
            await pilot.press("g")
        stacks.set_window((stacks.calltree.ts_ns.min(), int(np.median(stacks.calltree.ts_ns))))
        assert stacks.calltree.samples == pytest.approx(everything / 2, abs=2)
        await pilot.press("w")
        assert stacks.calltree.samples == everything


@pytest.mark.asyncio
async def test_export_writes_the_marked_window_as_a_valid_chrome_trace(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("4")
        await pilot.pause()
        await pilot.press("m", *["right"] * 10, "m", "e")
        await _ready(pilot)
        canvas = app.query_one(TimelineCanvas)
        start, end = canvas.selection
    assert len(app.exports) == 1
    path = app.exports[0]
    assert path.parent == (session_dir / "exports").resolve()
    trace = json.loads(path.read_text())
    assert validate_chrome_trace(trace) == []
    window = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    whole = json.loads(DirectorySource(session_dir).export(*canvas.bounds, None).read_text())
    everything = [e for e in whole["traceEvents"] if e.get("ph") == "X"]
    assert 0 < len(window) < len(everything) / 3  # a tenth of the view: the window, not the session
    requests = {e["args"]["request_id"] for e in window if e.get("cat") == "loadgen"}
    assert 0 < len(requests) < 48


@pytest.mark.asyncio
async def test_help_screen_opens_and_closes(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        for key, view in zip("23451", ("hotspots", "stages", "timeline", "stacks", "findings")):
            await pilot.press(key)
            assert app.current_view == view


@pytest.mark.asyncio
async def test_a_broken_timeline_is_reported_in_the_app_not_as_a_crash(session_dir: Path) -> None:
    (session_dir / "timeline.parquet").write_bytes(b"PAR1 this is not parquet")
    async with opened(session_dir) as (app, pilot):
        assert "could not load" in screen_text(app)
        await pilot.press("4", "plus", "5", "g", "2", "o", "e")  # nothing loaded: keys must not crash
        assert app.is_running


@pytest.mark.asyncio
async def test_mouse_click_moves_the_cursor_and_the_wheel_zooms(session_dir: Path) -> None:
    async with opened(session_dir) as (app, pilot):
        await pilot.click("#views Tab#--content-tab-timeline")
        await pilot.pause()
        assert app.current_view == "timeline"
        canvas = app.query_one(TimelineCanvas)
        await pilot.click(TimelineCanvas, offset=(40, 3))
        assert canvas.cursor == 40 - 23 and canvas.lane_index == 2
        full = canvas.window
        canvas.post_message(MouseScrollUp(canvas, 60, 3, 0, 0, 0, False, False, False))
        await pilot.pause()
        assert canvas.window[1] - canvas.window[0] < full[1] - full[0]


def test_prof_tui_refuses_a_directory_that_is_not_a_session(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "profiler.cli", "tui", str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "is not a prof session" in result.stderr
    assert "Traceback" not in result.stderr


def test_prof_tui_without_a_terminal_points_to_the_text_report(session_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROF_TUI_HEADLESS"}
    result = subprocess.run([sys.executable, "-m", "profiler.cli", "tui", str(session_dir)], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2 and "needs a terminal" in result.stderr and "prof report" in result.stderr
