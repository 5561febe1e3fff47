"""``prof import FILE... --out DIR``: a session from trace files users already have."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from profiler.cli.common import diagnosed, event_counts, headline
from profiler.session import Session, SessionError, build_timeline, import_files

EXAMPLES = """examples:
  prof import ort_profile.json --out prof-out/imported
  prof import trace.json.gz pyspy.json --out prof-out/mixed
"""


def main(argv: list[str], prog: str = "prof import") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Build a prof session from existing traces: ONNX Runtime profiles, "
        "PyTorch profiler (kineto) JSON, plain or gzipped, py-spy chrometrace or speedscope files, "
        "and Scalene JSON profiles.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="trace files (format detected from content)")
    parser.add_argument("--out", type=Path, help="session directory (default prof-out/import-<time>)")
    args = parser.parse_args(argv)

    out = args.out or Path("prof-out") / f"import-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        session = Session.create(out, command=["prof", "import", *map(str, args.files)])
    except SessionError as exc:
        print(f"prof import: {exc}", file=sys.stderr)
        return 2
    imported, errors = import_files(args.files, session)
    for error in errors:
        print(f"prof import: skipped {error}", file=sys.stderr)
    if not imported:
        print("prof import: nothing imported", file=sys.stderr)
        return 2
    warnings = build_timeline(session)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if session.timeline.empty:  # every file was recognised, none could be read (the warnings say why)
        print(f"prof import: nothing ingested; the files are kept in {out / 'raw'}", file=sys.stderr)
        return 2
    counts = event_counts(session)
    print(f"session {out}: {len(session.timeline):,} events ({', '.join(f'{s} {n:,}' for s, n in counts.items())})")
    console = Console()
    report = diagnosed(session, console)  # saves report.json: prof report/tui open the session at once
    if report is not None:
        headline(report, console)
    return 1 if errors else 0
