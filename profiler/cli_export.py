"""``prof export SESSION`` (Chrome trace, speedscope, Parquet) and ``prof diff A B``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

EXPORT_EXAMPLES = """examples:
  prof export prof-out/run-20261122-101500 --chrome trace.json     open in https://ui.perfetto.dev
  prof export SESSION --speedscope stacks.speedscope.json          py-spy stacks for speedscope.app
  prof export SESSION --parquet events.parquet                     the timeline, for pandas / DuckDB
"""

DIFF_EXAMPLES = """examples:
  prof diff prof-out/before prof-out/after       per-stage and per-hotspot changes, B against A
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
    from profiler.session import SessionError, atomic_write_parquet, load

    try:
        session = load(args.session)
    except SessionError as exc:
        print(f"prof export: {exc}", file=sys.stderr)
        return 2
    try:
        if args.chrome:
            from profiler.renderers.chrome import write_chrome_trace

            _atomic(args.chrome, lambda out: write_chrome_trace(session.timeline, out, session.stacks,
                                                                _process_names(session)))
            print(f"chrome trace: {args.chrome} ({len(session.timeline):,} events; open in ui.perfetto.dev)")
        if args.speedscope:
            from profiler.renderers.speedscope import render_speedscope

            samples = session.timeline[session.timeline["kind"] == "sample"]
            if samples.empty:
                print("prof export: no py-spy samples in this session: no speedscope file written",
                      file=sys.stderr)
                return 2
            data = render_speedscope(session.timeline, session.stacks, name=session.path.name)
            _atomic(args.speedscope, lambda out: out.write(data))
            print(f"speedscope: {args.speedscope}")
        if args.parquet:
            atomic_write_parquet(session.timeline, args.parquet)
            print(f"parquet: {args.parquet} ({len(session.timeline):,} rows)")
    except OSError as exc:
        print(f"prof export: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _process_names(session) -> dict[int, str]:
    names = {}
    server = session.meta.get("server") or {}
    if server.get("pid"):
        names[int(server["pid"])] = "sample server"
    target = session.meta.get("target") or {}
    if target.get("pid") and target.get("name"):
        names[int(target["pid"])] = str(target["name"])
    return names


def _atomic(path: Path, write) -> None:
    """Write through a temp file beside ``path`` and rename: never a half-written export."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def diff_main(argv: list[str], prog: str = "prof diff") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Compare two sessions: per-stage times and the "
                                     "biggest hotspots (py-spy functions, ORT op types, torch ops), B against A.",
                                     epilog=DIFF_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="baseline session")
    parser.add_argument("b", type=Path, help="session to compare")
    parser.add_argument("--top", type=int, default=15, help="hotspot rows (default 15)")
    args = parser.parse_args(argv)
    from rich.console import Console

    from profiler.diff import diff_sessions, print_diff
    from profiler.session import SessionError, load

    try:
        a, b = load(args.a), load(args.b)
    except SessionError as exc:
        print(f"prof diff: {exc}", file=sys.stderr)
        return 2
    print_diff(diff_sessions(a, b, args.top), Console(), args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
