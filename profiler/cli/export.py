"""``prof export SESSION``: the timeline as a Chrome trace (Perfetto), speedscope or Parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from profiler.atomic import atomic_open, atomic_write_bytes
from profiler.renderers.chrome import process_names, write_chrome_trace
from profiler.renderers.speedscope import render_speedscope
from profiler.session import SessionError, atomic_write_parquet, load

EXPORT_EXAMPLES = """examples:
  prof export prof-out/run-20261122-101500 --chrome trace.json     open in https://ui.perfetto.dev
  prof export SESSION --speedscope stacks.speedscope.json          py-spy stacks for speedscope.app
  prof export SESSION --parquet events.parquet                     the timeline, for pandas / DuckDB
"""



def main(argv: list[str], prog: str = "prof export") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Write a session's timeline in another format.",
                                     epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", type=Path, help="session directory")
    parser.add_argument("--chrome", type=Path, help="Chrome Trace Event JSON (Perfetto, chrome://tracing)")
    parser.add_argument("--speedscope", type=Path, help="speedscope JSON of the py-spy samples")
    parser.add_argument("--parquet", type=Path, help="the merged timeline as one Parquet file")
    args = parser.parse_args(argv)
    if not (args.chrome or args.speedscope or args.parquet):
        parser.error("choose at least one of --chrome, --speedscope, --parquet")
    try:
        session = load(args.session)
    except SessionError as exc:
        print(f"prof export: {exc}", file=sys.stderr)
        return 2
    try:
        if args.chrome:
            with atomic_open(args.chrome) as out:
                write_chrome_trace(session.timeline, out, session.stacks, process_names(session.meta))
            print(f"chrome trace: {args.chrome} ({len(session.timeline):,} events; open in ui.perfetto.dev)")
        if args.speedscope:
            samples = session.timeline[session.timeline["kind"] == "sample"]
            if samples.empty:
                print("prof export: no py-spy samples in this session: no speedscope file written",
                      file=sys.stderr)
                return 2
            data = render_speedscope(session.timeline, session.stacks, name=session.path.name)
            atomic_write_bytes(args.speedscope, data)
            print(f"speedscope: {args.speedscope}")
        if args.parquet:
            atomic_write_parquet(session.timeline, args.parquet)
            print(f"parquet: {args.parquet} ({len(session.timeline):,} rows)")
    except OSError as exc:
        print(f"prof export: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
