"""``prof diff A B``: two sessions side by side, B against A (figures of the measures layer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from profiler.diff import diff_figures, print_diff, session_figures
from profiler.session import SessionError

DIFF_EXAMPLES = """examples:
  prof diff prof-out/before prof-out/after       per-stage and per-hotspot changes, B against A
  prof diff BEFORE AFTER --top 30                more hotspot rows
"""


def main(argv: list[str], prog: str = "prof diff") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Compare two sessions: per-stage times and the "
                                     "biggest hotspots (py-spy functions, ORT op types, torch ops), B against A.",
                                     epilog=DIFF_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="baseline session")
    parser.add_argument("b", type=Path, help="session to compare")
    parser.add_argument("--top", type=int, default=15, help="hotspot rows (default 15)")
    args = parser.parse_args(argv)
    try:
        a, b = session_figures(args.a), session_figures(args.b)
    except SessionError as exc:
        print(f"prof diff: {exc}", file=sys.stderr)
        return 2
    print_diff(diff_figures(a, b, args.top), Console(), args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
