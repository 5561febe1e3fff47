"""The ``prof`` command. Each subcommand is one entry in ``COMMANDS``; its module owns its
arguments, so ``prof <command> --help`` is that command's full help."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

USAGE = """usage: prof <command> [options]

Find out why an image-classification server is slow, and what to do about it.

commands:
{commands}

Run 'prof <command> --help' for a command's options and examples.
"""


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    run: Callable[[list[str]], int]


def _serve(argv: list[str]) -> int:
    from samples.sample_server.__main__ import main

    return main(argv, prog="prof serve")


def _load(argv: list[str]) -> int:
    from samples.loadgen.__main__ import main

    return main(argv, prog="prof load")


def _import(argv: list[str]) -> int:
    from profiler.cli.import_traces import main

    return main(argv)


def _attach(argv: list[str]) -> int:
    from profiler.cli.attach import main

    return main(argv)


def _run(argv: list[str]) -> int:
    from profiler.cli.run import main

    return main(argv)


def _export(argv: list[str]) -> int:
    from profiler.cli.export import main

    return main(argv)


def _diff(argv: list[str]) -> int:
    from profiler.cli.diff import main

    return main(argv)


def _report(argv: list[str]) -> int:
    from profiler.cli.report import main

    return main(argv)


def _tui(argv: list[str]) -> int:
    from profiler.cli.tui import main

    return main(argv)


def _verify(argv: list[str]) -> int:
    from profiler.cli.verify import main

    return main(argv)


COMMANDS: tuple[Command, ...] = (
    Command("run", "start the sample server (or your command), drive load, profile every layer, summarize", _run),
    Command("attach", "profile a running Python server by pid (py-spy, psutil, its HTTP traffic, NVML, the agent)",
            _attach),
    Command("report", "name the bottleneck: findings with evidence, the fix and its estimated gain", _report),
    Command("tui", "explore a session interactively: findings, hotspots, stages, timeline, stacks", _tui),
    Command("verify", "re-run the sample server with each suggested fix: estimated vs measured gain", _verify),
    Command("export", "write a session as Chrome trace (Perfetto), speedscope or Parquet", _export),
    Command("diff", "compare two sessions stage by stage and hotspot by hotspot", _diff),
    Command("serve", "start the reference classification server (FastAPI + uvicorn, 127.0.0.1)", _serve),
    Command("load", "drive HTTP load at a server (or at a sample server it starts) and report latency", _load),
    Command("import", "build a session from ORT, PyTorch profiler or py-spy trace files you already have", _import),
)


def usage() -> str:
    width = max(len(c.name) for c in COMMANDS)
    return USAGE.format(commands="\n".join(f"  {c.name.ljust(width)}  {c.summary}" for c in COMMANDS))


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # `prof report ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"prof {version('prof')}")
        return 0
    by_name = {c.name: c for c in COMMANDS}
    command = by_name.get(argv[0])
    if command is None:
        print(f"prof: unknown command {argv[0]!r}; choose from {', '.join(by_name)}", file=sys.stderr)
        return 2
    return command.run(argv[1:])
