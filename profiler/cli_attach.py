"""``prof attach PID``: profile a running Python process prof did not start."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from profiler.analysis.calibration_policy import CalibrationPolicy
from profiler.analysis.diagnose import diagnose
from profiler.session import build_timeline
from profiler.renderers.report import gain_text
from profiler.report_store import save_report
from profiler.summary import print_summary

EXAMPLES = """examples:
  prof attach 4242                         20 s of py-spy, psutil (and NVML on a GPU host)
  prof attach 4242 --duration 60 --pyspy-rate 50 --out prof-out/api
  prof attach 4242 --probes all            also ORT/torch profiling, if the target runs the prof agent
  prof attach 4242 --no-wire               without capturing its HTTP traffic
  Ctrl-C ends the window early; everything collected so far is kept.

The target needs no changes. Its HTTP/1.1 traffic is watched on the wire (every request's
timing, sizes, status and body hash; never the bodies) when prof may capture packets (root
or CAP_NET_RAW). If it runs the prof agent (the sample server does; elsewhere
'import probes.agent; probes.agent.install()'), stage spans (and framework profiling with
--probes all) are switched on inside it for the window.
"""


def build_parser(prog: str = "prof attach") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Profile a running Python server: py-spy timed "
                                     "samples and thread dumps, psutil counters of it and its children, NVML "
                                     "per-process figures, and its own probes through the prof agent.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pid", type=int, help="process id of the running Python program")
    add_collect_arguments(parser)
    return parser


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
    parser.add_argument("--native", action="store_true", help="py-spy: include native (C/C++) frames")
    parser.add_argument("--blocking", action="store_true",
                        help="py-spy pauses the target while it reads each sample (exact, costs more)")
    parser.add_argument("--out", type=Path, help="session directory (default prof-out/<command>-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def chosen_probes(args: argparse.Namespace) -> set[str]:
    from profiler import collect

    probes = collect.parse_probes(args.probes)
    if args.no_wire:
        probes.discard("http")
    for port in args.wire_port:
        if not 0 < port < 65536:
            raise ValueError(f"--wire-port {port}: not a TCP port")
    return probes


def pyspy_options(args: argparse.Namespace, subprocesses: bool):
    from probes.pyspy import PySpyOptions
    from profiler.collect import DEFAULT_PYSPY_RATE

    rate = args.pyspy_rate or DEFAULT_PYSPY_RATE
    if rate <= 0 or rate > 10_000:
        raise ValueError(f"--pyspy-rate {rate}: choose 1..10000 samples per second")
    if not 0 <= args.gil_snapshots <= 20:
        raise ValueError(f"--gil-snapshots {args.gil_snapshots:g}: choose 0..20 per second")
    return PySpyOptions(rate=rate, gil=args.gil, native=args.native, subprocesses=subprocesses,
                        nonblocking=not args.blocking, snapshot_hz=args.gil_snapshots)


def main(argv: list[str], prog: str = "prof attach") -> int:
    args = build_parser(prog).parse_args(argv)
    errors = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
    console = Console()
    from profiler import collect
    from profiler.session import Session, SessionError

    try:
        probes = chosen_probes(args)
        if args.duration <= 0:
            raise ValueError("--duration must be positive")
        target = collect.check_target(args.pid)
        options = pyspy_options(args, subprocesses=bool(target.children()))
        if "pyspy" in probes:
            collect.wait_until_python(args.pid, timeout_s=5.0)
        out = args.out or collect.default_out("attach")
        session = Session.create(out, command=["prof", "attach", *argv], targets=[args.pid])
    except (ValueError, collect.CollectError, SessionError) as exc:
        errors.print(f"prof attach: {exc}", highlight=False, markup=False)
        return 2
    session.meta["target"] = _describe(target)
    collector = collect.Collector(session, args.pid, probes, options, wire_ports=frozenset(args.wire_port))
    undo = collect.raise_on_sigterm()
    outcome = "done"
    try:
        collector.start()
        outcome = _collect(collector, args.duration, console, args.quiet)
    except KeyboardInterrupt:
        outcome = "interrupted"
    finally:
        collector.stop()
        undo()
    return open_viewer(session.path, finish(session, outcome, console), args.tui)


def open_viewer(path, code: int, wanted: bool) -> int:
    """``--tui``: the viewer on a finished session (not after a failed or interrupted run)."""
    if not wanted or code != 0:
        return code
    from profiler.cli_tui import main as tui_main

    return tui_main([str(path)])


def _collect(collector, duration: float, console: Console, quiet: bool) -> str:
    from profiler import collect

    on = [p for p, info in collector.session.meta["probes"].items() if info.get("status") == "on"]
    with Progress(TextColumn("[bold]collecting[/bold] {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task(f"pid {collector.pid} · {', '.join(on) or 'nothing'}", total=duration)
        return collect.wait_window(collector, duration, lambda t: progress.update(task, completed=t))


def finish(session, outcome: str, console: Console) -> int:
    """Merge what was collected, diagnose, print the summary and the bottleneck; exit code 130
    when interrupted."""
    if outcome == "target-exited":
        session.add_note("the target exited during collection; the session holds what was collected until then")
    elif outcome == "interrupted":
        session.add_note("collection interrupted (Ctrl-C or SIGTERM); the session holds what was collected")
    session.meta["outcome"] = outcome
    session.save_meta()
    with console.status("merging the timeline"):
        build_timeline(session)
    report = diagnosed(session, console)
    if report is not None:
        print_summary(report, session.meta, event_counts(session), console, session.path)
        headline(report, console)
    return 130 if outcome == "interrupted" else 0


def event_counts(session) -> dict[str, int]:
    counts = session.timeline["source"].value_counts()
    return {str(k): int(v) for k, v in counts.items() if v}


def diagnosed(session, console: Console):
    """The fresh session's report (cached calibration only, never a measurement), saved beside
    it so ``prof report``/``prof tui`` open at once. The session is already safe on disk: a
    failure or Ctrl-C here costs only the summary, and says so."""
    try:
        with console.status("diagnosing"):
            report = diagnose(session, CalibrationPolicy("cached"))
    except KeyboardInterrupt:
        console.print(f"diagnosis skipped (interrupted); prof report {session.path} runs it", highlight=False,
                      markup=False)
        return None
    except Exception as exc:  # the collection is saved; say why the summary is missing
        console.print(Text.assemble(("diagnosis failed: ", "yellow"), f"{type(exc).__name__}: {exc}"))
        return None
    save_report(session.path, report)
    return report


def headline(report, console: Console) -> None:
    """The report's first finding in one line."""
    if not report.findings:
        console.print("[green]no finding:[/green] no rule saw a bottleneck in the measured evidence")
        return
    top = report.findings[0]
    console.print(Text.assemble(("bottleneck: ", "bold"), f"{top.title} ({top.rule}) · fix: {top.fix.summary} · "
                                f"{gain_text(top.estimated_gain)}"))
    if len(report.findings) > 1:
        console.print(f"  and {len(report.findings) - 1} more finding(s) in the report", highlight=False)


def _describe(process) -> dict:
    try:
        return {"pid": process.pid, "name": process.name(), "cmdline": process.cmdline()[:20]}
    except Exception:  # psutil errors on a process that just exited: the pid is enough
        return {"pid": process.pid}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
