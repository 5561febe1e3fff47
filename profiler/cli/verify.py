"""``prof verify SESSION``: prove the advice. For each finding whose fix is a sample-server
knob, re-run the server with that knob changed under the session's load, beside a baseline
with the original knobs, and print estimated vs measured gain side by side."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

EXAMPLES = """examples:
  prof verify prof-out/run-20261123-101500                 every finding with a knob, 10 s runs
  prof verify SESSION --rounds 3 --duration 15             steadier figures (alternated rounds)
  prof verify SESSION --rules batching-opportunity,cache-opportunity
  prof verify SESSION --json

Only sessions of 'prof run sample_server' can be verified: prof re-runs that server.
"""


def build_parser(prog: str = "prof verify") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Re-run the sample server with each suggested fix "
                                     "and compare the measured gain with prof's estimate.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", type=Path, help="a session of 'prof run sample_server'")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="alternated rounds (default 1)")
    parser.add_argument("--rules", help="comma list of rule ids to verify (default: every finding with a knob)")
    parser.add_argument("--no-calibration", action="store_true", help="estimates from shares only")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return parser


def main(argv: list[str], prog: str = "prof verify") -> int:
    args = build_parser(prog).parse_args(argv)
    from rich.console import Console

    from profiler.analysis.calibration_policy import CalibrationPolicy
    from profiler.analysis.diagnose import diagnose
    from profiler.session import SessionError, load
    from profiler.verify import AGREEMENT, run_verification, variants_for

    errors, console = Console(stderr=True, soft_wrap=True), Console()
    try:
        session = load(args.session)
        server = session.meta.get("server")
        if not server or "load" not in session.meta:
            raise ValueError(f"{args.session} is not a session of 'prof run sample_server': there is no server to "
                             "re-run (prof report still diagnoses it)")
        if args.duration <= 0 or args.rounds < 1:
            raise ValueError("--duration must be positive and --rounds at least 1")
    except (SessionError, ValueError) as exc:
        errors.print(f"{prog}: {exc}", highlight=False, markup=False)
        return 2
    policy = CalibrationPolicy.off() if args.no_calibration else CalibrationPolicy(
        "measure", status=None if args.json else Console(stderr=True).status)
    findings = diagnose(session, policy).findings
    if args.rules:
        wanted = {r.strip() for r in args.rules.split(",")}
        findings = [f for f in findings if f.rule in wanted]
    variants = variants_for(findings, list(server.get("knobs") or []), dict(session.meta["load"]))
    if len(variants) == 1:
        console.print("nothing to verify: no finding has a sample-server knob as its fix")
        return 0
    try:
        with console.status("verifying") as status:
            outcomes = run_verification(variants, args.rounds, args.duration, args.warmup,
                                        lambda text: status.update(f"verifying: {text}"))
    except KeyboardInterrupt:
        errors.print(f"{prog}: interrupted; no comparison printed")
        return 130
    if args.json:
        print(json.dumps([{**asdict(o), "error": o.error, "agrees": o.agrees} for o in outcomes], indent=2))
        return 0
    console.print(comparison_table(outcomes, f"estimated vs measured ({args.rounds} round(s) of "
                                              f"{args.duration:g} s, each beside a baseline)"))
    agreeing = sum(1 for o in outcomes if o.agrees)
    console.print(f"{agreeing} of {len(outcomes)} estimates within ±{AGREEMENT:.0%} of the measured gain")
    return 0


def comparison_table(outcomes, title: str):
    """Estimated vs measured gain, a row per verified finding (display only)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("finding", "change", "estimated", "measured", "p50 est. / measured", "verdict"):
        table.add_column(column)
    for o in outcomes:
        estimated = f"x{o.estimated_x:.2f}" if o.estimated_x else "n/a"
        p50 = (f"{o.estimated_p50_ms:.0f} / " if o.estimated_p50_ms is not None else "n/a / ") + \
            f"{o.measured_p50_ms:.0f} ms (was {o.baseline_p50_ms:.0f})"
        verdict = "n/a" if o.agrees is None else ("[green]within ±30%[/green]" if o.agrees else
                                                  f"[yellow]off by {o.error:+.0%}[/yellow]")
        table.add_row(o.rule, o.change, estimated, f"x{o.measured_x:.2f}", p50, verdict)
    return table


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
