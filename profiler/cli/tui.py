"""``prof tui SESSION``: the interactive viewer. This module is the glue the TUI may not hold:
it reads the session directory, takes (or makes) the report from the report store, the measured
requests from the measures layer, and writes Chrome-trace exports — the app only receives the
results."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Literal

from typing import TYPE_CHECKING

from profiler.analysis.calibration_policy import CalibrationPolicy
from profiler.analysis.model import Report
from profiler.report_store import report_for
from profiler.session_files import META

if TYPE_CHECKING:
    from profiler.session import Session
    from tui.prepare import TuiData

# pandas and the timeline load in the viewer's worker, after the first frame: the imports of
# what needs them are made where they are used.

EXPORTS_DIR = "exports"
Calibrate = Literal["cached", "measure", "off"]

EXAMPLES = """examples:
  prof tui prof-out/run-20261123-101500     open a session (findings first)
  prof run sample_server --tui              profile, then open the viewer on the result
  prof tui SESSION --calibrate measure      time the model first if this host has no calibration

In the viewer: 1-5 switch views, Enter drills into a finding, e exports the marked timeline
window as a Chrome trace (into SESSION/exports/), ? lists every key, q quits.
"""


class DirectorySource:
    """A session directory as the TUI's data source."""

    def __init__(self, path: Path, calibrate: Calibrate = "cached", threads: int | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.policy = CalibrationPolicy(calibrate, threads, host_timings=calibrate != "off")
        self._session: Session | None = None

    def session(self) -> Session:
        if self._session is None:
            from profiler.session import load

            self._session = load(self.path)
        return self._session

    def report(self) -> Report:
        return report_for(self.path, self.policy)

    def data(self, report: Report) -> TuiData:
        from profiler.measures import Measures
        from tui.prepare import prepare

        session = self.session()
        measured = Measures(session.timeline, session.stacks, session.meta).outer_request_table()
        return prepare(report, self.name, session.meta, session.timeline, session.stacks, requests=measured)

    def export(self, start_ns: int, end_ns: int, sources: list[str] | None) -> Path:
        from profiler.atomic import atomic_open
        from profiler.renderers.chrome import process_names, write_chrome_trace
        from profiler.session import safe_child

        session = self.session()
        events = session.timeline
        keep = (events["ts_ns"].to_numpy() < end_ns) & ((events["ts_ns"] + events["dur_ns"]).to_numpy() >= start_ns)
        if sources:
            keep &= events["source"].isin(sources).to_numpy()
        subset = events[keep]
        origin = int(events["ts_ns"].min()) if len(events) else start_ns
        name = f"selection-{(start_ns - origin) // 1_000_000}ms-{(end_ns - origin) // 1_000_000}ms.json"
        target = safe_child(self.path, EXPORTS_DIR, name)
        with atomic_open(target) as out:
            write_chrome_trace(subset, out, session.stacks, process_names(session.meta))
        return target


def build_parser(prog: str = "prof tui") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Explore a session: findings, hotspots, stages, "
                                     "timeline and stacks in one terminal viewer.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", type=Path, help="a session directory (from prof run, attach or import)")
    parser.add_argument("--calibrate", choices=("cached", "measure", "off"), default="cached",
                        help="gains that need model timings: use this host's cached calibration (default), "
                        "measure it now (~30 s once), or leave such gains out")
    parser.add_argument("--calibration-threads", type=int, default=None, help="threads of the calibration to use")
    return parser


def main(argv: list[str], prog: str = "prof tui") -> int:
    args = build_parser(prog).parse_args(argv)
    if not (args.session / META).is_file():
        print(f"{prog}: {args.session} is not a prof session (no meta.json)", file=sys.stderr)
        return 2
    if not sys.stdout.isatty() and not os.environ.get("PROF_TUI_HEADLESS"):
        print(f"{prog}: the viewer needs a terminal; for text use: prof report {args.session}", file=sys.stderr)
        return 2
    from profiler.session import SessionError
    from tui.app import ProfApp  # Textual: only when the viewer opens

    try:
        ProfApp(DirectorySource(args.session, args.calibrate, args.calibration_threads)).run()
    except SessionError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
