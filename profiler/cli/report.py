"""``prof report SESSION``: the diagnosis — findings ranked by the time they explain, each
with evidence, fix and estimated gain; then the stage breakdown and the hotspots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from profiler.analysis.attribution import load_signatures
from profiler.analysis.calibration_policy import CalibrationPolicy
from profiler.analysis.diagnose import diagnose
from profiler.renderers.report import render_json, render_markdown, render_text
from profiler.report_store import save_report
from profiler.session import SessionError, load

EXAMPLES = """examples:
  prof report prof-out/run-20261123-101500               findings, stages and hotspots
  prof report SESSION --markdown > report.md             the same as Markdown
  prof report SESSION --json | jq '.findings[0]'         stable JSON schema (see README)
  prof report SESSION --no-calibration                   gains from shares only (no model timing)
  prof report SESSION --signatures my_stages.toml        your own stack -> stage signatures
  prof report SESSION --model model.onnx                 gains timed on your own model

Gains that need a factor (batch scaling, INT8 speed-up, ORT vs torch) come from a short
calibration run of the model on this host (~30 s the first time, then cached).
"""


def build_parser(prog: str = "prof report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Name the bottleneck of a profiled server: findings "
                                     "with evidence, the fix, and its estimated gain.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", type=Path, help="a session directory (from prof run, attach or import)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    parser.add_argument("--no-calibration", action="store_true", help="do not time the model on this host")
    parser.add_argument("--calibration-threads", type=int, default=None,
                        help="threads for the calibration run (default: the sample server's intra-op threads, "
                        "one per core unless set; 1 for other servers)")
    parser.add_argument("--model", type=Path, default=None,
                        help="your server's ONNX model: time it for the gains instead of the sample ResNet-18 "
                        "(one float NCHW input; cached per file and host)")
    parser.add_argument("--signatures", type=Path, action="append", default=[],
                        help="extra stack-signature TOML file(s) for stage attribution; repeatable")
    parser.add_argument("--limit", type=int, default=8, help="findings shown in text form (default 8)")
    return parser


def policy_from_args(args: argparse.Namespace, quiet: bool) -> CalibrationPolicy:
    """The calibration policy a report's options ask for (a spinner while measuring unless quiet)."""
    if args.no_calibration:
        return CalibrationPolicy.off()
    status = None if quiet else Console(stderr=True).status
    return CalibrationPolicy("measure", args.calibration_threads, getattr(args, "model", None), status=status)


def main(argv: list[str], prog: str = "prof report") -> int:
    args = build_parser(prog).parse_args(argv)
    errors = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
    try:
        session = load(args.session)
        load_signatures(args.signatures)  # a bad signature file is the user's error: say so before analysing
        if args.model is not None and (not args.model.is_file() or args.model.suffix.lower() != ".onnx"):
            raise ValueError(f"--model {args.model}: not an .onnx file")
    except (SessionError, ValueError, OSError) as exc:
        errors.print(f"{prog}: {exc}", highlight=False, markup=False)
        return 2
    report = diagnose(session, policy_from_args(args, quiet=args.json or args.markdown), args.signatures)
    save_report(session.path, report)  # with the signatures it used: the viewer reuses it only for the same
    if args.json:
        sys.stdout.write(render_json(report) + "\n")
    elif args.markdown:
        sys.stdout.write(render_markdown(report))
    else:
        Console().print(render_text(report, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
