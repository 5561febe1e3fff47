"""``prof attach PID``: profile a running Python process prof did not start."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from profiler import collect
from profiler.cli.common import add_collect_arguments, chosen_probes, finish, open_viewer
from profiler.session import Session, SessionError

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


def main(argv: list[str], prog: str = "prof attach") -> int:
    args = build_parser(prog).parse_args(argv)
    errors = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
    console = Console()
    try:
        probes = chosen_probes(args)
        if args.duration <= 0:
            raise ValueError("--duration must be positive")
        target = collect.check_target(args.pid)
        options = collect.pyspy_options(args, subprocesses=bool(target.children()))
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
    if outcome != "interrupted":
        session.meta["model"] = _find_model(args.pid, console, args.quiet)
    return open_viewer(session.path, finish(session, outcome, console), args.tui)


def _find_model(pid: int, console: Console, quiet: bool) -> dict:
    """The model files the target shows (:mod:`probes.model_discovery`), after the window so the
    one ``py-spy dump --locals`` does not pause it while it is measured."""
    from probes.model_discovery import discover
    from probes.pyspy import pyspy_binary

    try:
        pyspy = pyspy_binary()
    except Exception:  # no py-spy: the command line, environment and open files still tell
        pyspy = None
    found = [f.to_dict() for f in discover(pid, pyspy)] if collect.alive(pid) else []
    if not quiet:
        console.print(f"model: {found[0]['path']} ({found[0]['format']}, from its {found[0]['found_in']})" if found
                      else "model: not found (prof report SESSION --model FILE.onnx gives it)", highlight=False,
                      markup=False)
    return {"found": found}


def _collect(collector, duration: float, console: Console, quiet: bool) -> str:
    on = [p for p, info in collector.session.meta["probes"].items() if info.get("status") == "on"]
    with Progress(TextColumn("[bold]collecting[/bold] {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task(f"pid {collector.pid} · {', '.join(on) or 'nothing'}", total=duration)
        return collect.wait_window(collector, duration, lambda t: progress.update(task, completed=t))


def _describe(process) -> dict:
    try:
        return {"pid": process.pid, "name": process.name(), "cmdline": process.cmdline()[:20]}
    except Exception:  # psutil errors on a process that just exited: the pid is enough
        return {"pid": process.pid}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
