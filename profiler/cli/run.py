"""``prof run sample_server [knobs]`` and ``prof run [options] -- COMMAND...``: the options; the
run itself (target, probes, load, stop) is :mod:`profiler.runs`."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from profiler import collect, runs
from profiler.cli.common import add_collect_arguments, chosen_probes, finish, open_viewer
from profiler.session import Session, SessionError
from samples.loadgen.__main__ import add_load_options
from samples.sample_server.config import add_server_arguments

EXAMPLES = """examples:
  prof run sample_server                               20 s, 8 clients, default probes (+ ORT per-node profiling)
  prof run sample_server --max-batch 8 --concurrency 16 --duration 30
  prof run sample_server --backend torch-eager --probes all      adds torch.profiler
  prof run sample_server --rate 40 --duplicates 0.3 --payload msgpack --image-sizes 224,1280x720
  prof run --url http://127.0.0.1:9000/predict -- python my_server.py --port 9000
  prof run --duration 30 -- python batch_job.py        no load: profile the command for 30 s

Server knobs (--backend, --max-batch, --cache ...) are those of 'prof serve --help'; the
load options those of 'prof load --help'. Ctrl-C stops everything and keeps the session.
"""


def build_parser(prog: str = "prof run") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, usage=f"{prog} sample_server [knobs] [options] | {prog} [options] -- COMMAND...",
        description="Start the reference server (or your command) with every probe on, drive load at it, "
        "collect, merge into one timeline, and print a summary.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", choices=["sample_server"], help="what to run (or a command after --)")
    add_collect_arguments(parser)
    load = parser.add_argument_group("load (as 'prof load')")
    add_load_options(load, warmup_s=3.0)
    load.add_argument("--url", help="with a COMMAND: the classify endpoint to drive load at (none: no load)")
    add_server_arguments(parser)
    return parser


def main(argv: list[str], prog: str = "prof run") -> int:
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    errors = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
    if bool(command) == bool(args.target):
        parser.error("give either 'sample_server' or a command after --")
    try:
        probes = chosen_probes(args)
        if args.target and args.probes == "default" and (getattr(args, "backend", None) or "ort") == "ort":
            # ORT per-node profiling is cheap (benchmarks/results/overhead.md) and names the model's
            # own hotspots; ORT caps a profile at a million events
            probes.add("framework")
        if args.duration <= 0:
            raise ValueError("--duration must be positive")
        knobs, config = runs.server_knobs(args) if args.target else ([], None)
        mix = runs.load_mix(args)
        out = args.out or collect.default_out("run")
        session = Session.create(out, command=["prof", "run", *argv, *(["--", *command] if command else [])])
    except (ValueError, SessionError) as exc:
        errors.print(f"prof run: {exc}", highlight=False, markup=False)
        return 2
    console = Console()
    runner = runs.SampleServerRun(session, args, probes, knobs, config, mix) if args.target else \
        runs.CommandRun(session, args, probes, command, mix)
    try:
        outcome = runner.run(console)
    except runs.RunError as exc:
        errors.print(f"{prog}: {exc}", highlight=False, markup=False)
        return 2
    return open_viewer(session.path, finish(session, outcome, console), args.tui)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
