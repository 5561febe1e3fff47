"""What several commands share: the collection options of ``prof run`` and ``prof attach``, the
end of a collection as the user sees it (merge, diagnose, the summary and the bottleneck), and
opening the viewer afterwards."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from probes.gc_watch import RATE_HZ as GC_WATCH_HZ
from profiler import collect
from profiler.analysis.calibration_policy import CalibrationPolicy
from profiler.analysis.model import Report
from profiler.renderers.report import gain_text
from profiler.report_store import diagnose_and_save
from profiler.session import Session
from profiler.summary import print_summary


def add_collect_arguments(parser: argparse.ArgumentParser, duration_default: float = 20.0) -> None:
    parser.add_argument("--duration", "-d", type=float, default=duration_default,
                        help=f"seconds to collect (default {duration_default:g})")
    parser.add_argument("--tui", action="store_true",
                        help="open the interactive viewer (prof tui) on the session at the end")
    parser.add_argument("--probes", default="default",
                        help="default, all, none, or a comma list of pyspy,proc,nvml,http,stages,framework "
                        "('-pyspy' drops one from the default set)")
    parser.add_argument("--no-wire", action="store_true",
                        help="do not capture the target's HTTP traffic (the http probe; it needs CAP_NET_RAW)")
    parser.add_argument("--wire-port", type=int, action="append", default=[], metavar="PORT",
                        help="also watch this TCP port (e.g. a proxy in front of the target); repeatable")
    parser.add_argument("--pyspy-rate", type=int, default=None,
                        help="py-spy samples per second (default 20, non-blocking; what each rate costs: "
                        "benchmarks/results/overhead.md)")
    parser.add_argument("--gil", action="store_true", help="py-spy: only samples of the thread holding the GIL")
    parser.add_argument("--gil-snapshots", type=float, default=2.0, metavar="HZ",
                        help="py-spy dumps per second that see who holds the GIL and who waits for it "
                        "(default 2; 0: off; each costs py-spy ~13 ms of CPU, the target is not paused)")
    parser.add_argument("--gc-watch", type=int, default=GC_WATCH_HZ, metavar="HZ",
                        help="native py-spy samples per second that see the garbage collector (gc-pauses); "
                        "one slow recorder beside the main one, pausing the target for each unwind "
                        "(default 4; 0: off; cost in benchmarks/results/overhead.md)")
    parser.add_argument("--native", action="store_true", help="py-spy: include native (C/C++) frames")
    parser.add_argument("--blocking", action="store_true",
                        help="py-spy pauses the target while it reads each sample (exact, costs more)")
    parser.add_argument("--out", type=Path, help="session directory (default prof-out/<command>-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def chosen_probes(args: argparse.Namespace) -> set[str]:
    probes = collect.parse_probes(args.probes)
    if args.no_wire:
        probes.discard("http")
    for port in args.wire_port:
        if not 0 < port < 65536:
            raise ValueError(f"--wire-port {port}: not a TCP port")
    return probes


def open_viewer(path, code: int, wanted: bool) -> int:
    """``--tui``: the viewer on a finished session (not after a failed or interrupted run)."""
    if not wanted or code != 0:
        return code
    from profiler.cli.tui import main as tui_main  # Textual: only when the viewer opens

    return tui_main([str(path)])


def finish(session: Session, outcome: str, console: Console) -> int:
    """Merge what was collected, diagnose (cached calibration only, never a measurement), print
    the summary and the bottleneck; exit code 130 when interrupted."""
    with console.status("merging the timeline"):
        collect.finish_collection(session, outcome)
    report = diagnosed(session, console)
    if report is not None:
        print_summary(report, session.meta, event_counts(session), console, session.path)
        headline(report, console)
    return 130 if outcome == "interrupted" else 0


def event_counts(session: Session) -> dict[str, int]:
    counts = session.timeline["source"].value_counts()
    return {str(k): int(v) for k, v in counts.items() if v}


def diagnosed(session: Session, console: Console) -> Report | None:
    """The fresh session's report, saved beside it so ``prof report``/``prof tui`` open at once.
    The session is already safe on disk: a failure or Ctrl-C here costs only the summary, and
    says so."""
    try:
        with console.status("diagnosing"):
            return diagnose_and_save(session, CalibrationPolicy("cached"))
    except KeyboardInterrupt:
        console.print(f"diagnosis skipped (interrupted); prof report {session.path} runs it", highlight=False,
                      markup=False)
    except Exception as exc:  # the collection is saved; say why the summary is missing
        console.print(Text.assemble(("diagnosis failed: ", "yellow"), f"{type(exc).__name__}: {exc}"))
    return None


def headline(report: Report, console: Console) -> None:
    """The report's first finding in one line."""
    if not report.findings:
        console.print("[green]no finding:[/green] no rule saw a bottleneck in the measured evidence")
        return
    top = report.findings[0]
    console.print(Text.assemble(("bottleneck: ", "bold"), f"{top.title} ({top.rule}) · fix: {top.fix.summary} · "
                                f"{gain_text(top.estimated_gain)}"))
    if top.estimated_gain is None:
        step = next((note for note in report.notes if "prof report" in note), None)
        if step:
            console.print(f"  gain: {step.replace('SESSION', report.session)}", highlight=False, markup=False)
    after = top.evidence.get("after_the_cache") if top.rule == "cache-opportunity" else None
    if after:
        nxt = report.findings[1]
        console.print(Text.assemble(("  after the cache: ", "bold"), f"{nxt.title} ({nxt.rule}) · "
                                    f"{gain_text(nxt.estimated_gain)}"))
    if len(report.findings) > 1:
        console.print(f"  and {len(report.findings) - 1} more finding(s) in the report", highlight=False)
