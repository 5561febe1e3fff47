"""``prof tui`` on a 1M-event session: how soon the first frame, the findings and every view
are on screen, and how long a key takes to answer once they are.

Each opening runs in a fresh interpreter (headless Textual at 120×40), timed from the start
of the script, imports included:

- ``cached``: the session holds ``report.json`` (written by ``prof report``, ``prof run --tui``
  or an earlier ``prof tui``), so only the timeline is loaded in the background;
- ``cold``: no saved report: the diagnosis runs in the background worker first.

Then key latencies on the loaded session: timeline zoom / pan / cursor over 1M events, and
paging through the hotspots table.

    .venv/bin/python benchmarks/tui_paint.py [--events 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPEN = """
import time
T0 = time.perf_counter()
import asyncio, json, sys
from pathlib import Path
from profiler.cli.tui import DirectorySource
from tui.app import ProfApp

marks = {}

class Timed(ProfApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(lambda: marks.setdefault("first_frame", time.perf_counter() - T0))

    def on_prof_app_report_ready(self, message):
        super().on_prof_app_report_ready(message)
        self.call_after_refresh(lambda: marks.setdefault("findings", time.perf_counter() - T0))

    def on_prof_app_data_ready(self, message):
        super().on_prof_app_data_ready(message)
        self.call_after_refresh(lambda: marks.setdefault("all_views", time.perf_counter() - T0))

async def main():
    app = Timed(DirectorySource(Path(sys.argv[1]), calibrate="off"))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        while "all_views" not in marks:
            await pilot.pause(0.01)
        keys = {}
        if sys.argv[2] == "keys":
            for view, presses in (("4", ["plus"] * 6 + ["minus"] * 6 + ["l"] * 6 + ["h"] * 6 + ["right"] * 12),
                                  ("2", ["pagedown"] * 6 + ["o"] * 5), ("5", ["g"] * 4)):
                await pilot.press(view)
                await pilot.pause()
                for key in presses:
                    t = time.perf_counter()
                    await pilot.press(key)
                    await pilot.pause()
                    keys.setdefault(f"{view}:{key}", []).append(time.perf_counter() - t)
    print(json.dumps({"marks": marks, "keys": keys, "events": len(app.data.events)}))

asyncio.run(main())
"""


def open_once(path: Path, keys: bool) -> dict:
    result = subprocess.run([sys.executable, "-c", OPEN, str(path), "keys" if keys else "open"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise SystemExit(f"the viewer failed on the benchmark session:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="openings of each kind, the kinds taking turns")
    args = parser.parse_args()
    from benchmarks.timeline_scale import make_session
    from profiler.session import build_timeline
    from profiler.session import load

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "session"
        make_session(path, args.events)
        build_timeline(load(path, rebuild=False))
        runs: dict[str, list[dict]] = {"cached": [], "cold": []}
        for _ in range(args.repeats):
            (path / "report.json").unlink(missing_ok=True)
            runs["cold"].append(open_once(path, keys=False))  # leaves report.json behind
            runs["cached"].append(open_once(path, keys=False))
        keyed = open_once(path, keys=True)
    events = runs["cached"][0]["events"]
    print(f"prof tui on a synthetic session of {events:,} events, headless 120×40, fresh interpreter per "
          f"opening, {args.repeats} openings of each kind (alternated); seconds from script start, "
          "median [min..max]\n")
    print("| opening | first frame | findings on screen | every view ready |\n|---|---|---|---|")
    for kind, results in runs.items():
        cells = []
        for mark in ("first_frame", "findings", "all_views"):
            values = sorted(r["marks"][mark] for r in results)
            cells.append(f"{statistics.median(values):.2f} [{values[0]:.2f}..{values[-1]:.2f}]")
        print(f"| {kind} report | {' | '.join(cells)} |")
    print("\nkey to next frame, ms, on the loaded session: median [max] (n)\n")
    print("| view:key | median | max | n |\n|---|---|---|---|")
    for key, values in keyed["keys"].items():
        ms = sorted(v * 1000 for v in values)
        print(f"| {key} | {statistics.median(ms):.0f} | {ms[-1]:.0f} | {len(ms)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
