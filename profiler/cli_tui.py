"""``prof tui SESSION``: the interactive viewer. This module is the glue the TUI may not hold:
it reads the session directory, runs (or reuses) the diagnosis, attributes py-spy samples to
stages, and writes Chrome-trace exports — the app only receives the results."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from profiler.analysis.model import SCHEMA_VERSION, Report

if TYPE_CHECKING:
    import numpy as np

    from profiler.session import Session

REPORT_FILE = "report.json"
EXPORTS_DIR = "exports"
Calibrate = Literal["cached", "measure", "off"]

EXAMPLES = """examples:
  prof tui prof-out/run-20261123-101500     open a session (findings first)
  prof run sample_server --tui              profile, then open the viewer on the result
  prof tui SESSION --calibrate measure      time the model first if this host has no calibration

In the viewer: 1-5 switch views, Enter drills into a finding, e exports the marked timeline
window as a Chrome trace (into SESSION/exports/), ? lists every key, q quits.
"""


def save_report(path: Path, report: Report) -> None:
    """Keep the report beside the timeline so the viewer opens at once next time (best
    effort: a read-only session just re-diagnoses)."""
    from profiler.session import atomic_write_bytes

    try:
        atomic_write_bytes(path / REPORT_FILE, json.dumps(report.to_dict(), default=str).encode())
    except OSError:
        pass


def cached_report(path: Path) -> Report | None:
    """The saved report when it is at least as new as the timeline and of this schema."""
    report_path, timeline_path = path / REPORT_FILE, path / "timeline.parquet"
    try:
        if not timeline_path.is_file() or report_path.stat().st_mtime < timeline_path.stat().st_mtime:
            return None
        data = json.loads(report_path.read_text())
        if data.get("schema_version") != SCHEMA_VERSION or os.environ.get("PROF_SIGNATURES"):
            return None
        return Report.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def diagnose_session(path: Path, calibrate: Calibrate = "cached", threads: int | None = None) -> Report:
    """The session's report, from ``report.json`` when it is current, else diagnosed now (and
    saved). ``calibrate="cached"`` never measures: gains that need a model timing use this host's
    cached calibration or go without, so this is quick enough to run at the end of a collection."""
    return DirectorySource(path, calibrate, threads).report()


class DirectorySource:
    """A session directory as the TUI's data source."""

    def __init__(self, path: Path, calibrate: Calibrate = "cached", threads: int | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.calibrate = calibrate
        self.threads = threads
        self._session: Session | None = None

    def session(self) -> Session:
        if self._session is None:
            from profiler.session import load

            self._session = load(self.path)
        return self._session

    def report(self) -> Report:
        cached = cached_report(self.path)
        if cached is not None:
            return cached
        from profiler.analysis.diagnose import diagnose

        report = diagnose(self.session(), calibration_loader=self._calibration_loader())
        save_report(self.path, report)
        return report

    def _calibration_loader(self):
        if self.calibrate == "off":
            return None
        from profiler.cli_report import calibration_loader

        if self.calibrate == "measure":
            return calibration_loader(self.session(), self.threads, quiet=True)
        from profiler.analysis.calibration import cached_calibration
        from profiler.cli_report import calibration_threads

        threads = calibration_threads(self.session(), self.threads)  # the same choice as prof report's
        return lambda: cached_calibration(threads)

    def data(self, report: Report):
        from tui.prepare import prepare

        session = self.session()
        return prepare(report, self.name, session.meta, session.timeline, session.stacks,
                       sample_stages=_sample_stages(session), thread_names=_thread_names(session))

    def export(self, start_ns: int, end_ns: int, sources: list[str] | None) -> Path:
        from profiler.cli_export import _atomic, _process_names
        from profiler.renderers.chrome import write_chrome_trace
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
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic(target, lambda out: write_chrome_trace(subset, out, session.stacks, _process_names(session)))
        return target


def _thread_names(session: Session) -> dict[int, str]:
    """Python thread names of the profiled processes (from py-spy's dumps), for lane labels."""
    from probes.pyspy import thread_names
    from profiler.session import RAW, safe_child

    return thread_names(safe_child(session.path, RAW, "pyspy"))  # none there: thread ids are shown


def _sample_stages(session: Session) -> np.ndarray | None:
    """The stage each sample of the timeline was attributed to, in timeline order."""
    import numpy as np
    import pandas as pd

    events = session.timeline
    samples = (events["kind"] == "sample").to_numpy()
    if not samples.any():
        return None
    from profiler.analysis.attribution import as_stage, attribute_samples

    labels = np.full(int(samples.sum()), "other", dtype=object)
    attributed = attribute_samples(events, session.stacks)
    where = pd.Index(events.index[samples]).get_indexer(attributed.index)
    labels[where] = attributed.map(as_stage).astype(str).to_numpy()  # the viewer shows stages: send is serialize
    return labels


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
    if not (args.session / "meta.json").is_file():
        print(f"{prog}: {args.session} is not a prof session (no meta.json)", file=sys.stderr)
        return 2
    if not sys.stdout.isatty() and not os.environ.get("PROF_TUI_HEADLESS"):
        print(f"{prog}: the viewer needs a terminal; for text use: prof report {args.session}", file=sys.stderr)
        return 2
    from profiler.session import SessionError
    from tui.app import ProfApp

    try:
        ProfApp(DirectorySource(args.session, args.calibrate, args.calibration_threads)).run()
    except SessionError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
