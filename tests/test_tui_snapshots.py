"""How each view looks, at 80×24 and at a large size, on the deterministic generated session
(SVG snapshots; textual and pytest-textual-snapshot are pinned in the dev extras so a new
release's rendering changes cannot fail them silently). Update after a deliberate change with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the SVGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.cli.tui import DirectorySource
from tests.tui_session import make_tui_session
from tui.app import ProfApp

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


@pytest.fixture
def app(tmp_path: Path) -> ProfApp:
    return ProfApp(DirectorySource(make_tui_session(tmp_path / "demo"), calibrate="off"))


async def _loaded(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("keys", [(), ("enter",), ("2",), ("3",), ("4",), ("5",), ("question_mark",)],
                         ids=["findings", "finding-detail", "hotspots", "stages", "timeline", "stacks", "help"])
def test_view_at_80x24(snap_compare, app: ProfApp, keys: tuple[str, ...]) -> None:
    assert snap_compare(app, press=keys, terminal_size=(80, 24), run_before=_loaded)


@pytest.mark.parametrize("keys", [(), ("4", "plus", "plus", "right", "right", "down", "down", "down")],
                         ids=["findings", "timeline-zoomed"])
def test_view_at_160x48(snap_compare, app: ProfApp, keys: tuple[str, ...]) -> None:
    assert snap_compare(app, press=keys, terminal_size=(160, 48), run_before=_loaded)
