"""Kineto trace ingest: prof vs Holistic Trace Analysis' parser, side by side, alternated.

HTA lives in its own virtual environment (created on first use in benchmarks/.hta-venv with
HolisticTraceAnalysis==0.5.0) so it never touches prof's. Each repeat runs prof's ingest in a
fresh interpreter and HTA's ``parse_trace_dataframe`` in its own, timing the parse only. prof
runs twice per repeat: as shipped (the batches shared among one process per usable core when
the trace is big enough) and held to one process (``PROF_INGEST_WORKERS=1``).

    .venv/bin/python benchmarks/ingest_kineto.py [--trace tests/data/kineto/a100_train_rank0.json.gz]

A second table times whole commands from outside, start to exit, alternated the same way:
``prof import TRACE`` as a user runs it (fresh process, the ingest, the diagnosis and the saved
report included) against a fresh Python process that imports HTA and parses the same trace
(HTA's least work for the same file: no analysis after the parse).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from probes.forked import usable_cores
from probes.kineto_typed import share_count

ROOT = Path(__file__).resolve().parents[1]
HTA_VENV = ROOT / "benchmarks" / ".hta-venv"
PROF_SNIPPET = ("import sys, time\nfrom probes.kineto import ingest_kineto\nt = time.perf_counter()\n"
                "events = ingest_kineto(sys.argv[1]).events\nprint(f'{time.perf_counter() - t:.4f} {len(events)}')\n")
HTA_SNIPPET = ("import sys, time\nfrom hta.common.trace_parser import parse_trace_dataframe\n"
               "from hta.configs.parser_config import ParserConfig\nt = time.perf_counter()\n"
               "meta, df, symbols = parse_trace_dataframe(sys.argv[1], ParserConfig())\n"
               "print(f'{time.perf_counter() - t:.4f} {len(df)}')\n")


def hta_python() -> Path:
    python = HTA_VENV / "bin" / "python"
    if not python.exists():
        venv.create(HTA_VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "HolisticTraceAnalysis==0.5.0"], check=True)
    return python


def timed(python: Path | str, snippet: str, trace: Path, workers: str | None = None) -> tuple[float, int]:
    env = {**os.environ, "PROF_INGEST_WORKERS": workers} if workers else None
    result = subprocess.run([str(python), "-c", snippet, str(trace)], capture_output=True, text=True, cwd=ROOT,
                            check=True, env=env)
    seconds, rows = result.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(rows)


# HTA's own way in (a directory of rank traces) and the analyses nearest to what prof import's
# diagnosis judges: temporal and idle breakdowns, kernels, launches, queue lengths, memcpy bandwidth.
HTA_ANALYSES = """import sys
from hta.trace_analysis import TraceAnalysis
analyzer = TraceAnalysis(trace_dir=sys.argv[1])
analyzer.get_temporal_breakdown(visualize=False)
analyzer.get_idle_time_breakdown(visualize=False)
analyzer.get_gpu_kernel_breakdown(visualize=False)
analyzer.get_cuda_kernel_launch_stats(visualize=False)
analyzer.get_queue_length_summary(ranks=[0])
analyzer.get_memory_bw_summary(ranks=[0])
"""


def _trace_dir(trace: Path, out: str) -> Path:
    """A directory holding the trace as HTA expects it (one file per rank)."""
    directory = Path(out + "-hta")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "rank-0.json.gz"
    if not target.exists():
        target.write_bytes(trace.read_bytes())
    return directory


def whole_command(command: list[str]) -> float:
    """Wall seconds of a command from start to exit (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, cwd=ROOT, check=True)
    return time.perf_counter() - started


def whole_commands(trace: Path, repeats: int, hta: Path) -> dict[str, list[float]]:
    prof = str(Path(sys.executable).with_name("prof"))
    hta_parse = ("import sys\nfrom hta.common.trace_parser import parse_trace_dataframe\n"
                 "from hta.configs.parser_config import ParserConfig\n"
                 "meta, df, symbols = parse_trace_dataframe(sys.argv[1], ParserConfig())\nprint(len(df))\n")
    commands = {"prof import (whole command, report included)": lambda out: [prof, "import", str(trace), "--out", out],
                "HTA 0.5.0 (fresh process: import + parse)": lambda out: [str(hta), "-c", hta_parse, str(trace)],
                "HTA 0.5.0 (TraceAnalysis + six analyses)": lambda out: [str(hta), "-c", HTA_ANALYSES,
                                                                         str(_trace_dir(trace, out))]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            order = list(commands) if repeat % 2 == 0 else list(reversed(commands))
            for name in order:
                times[name].append(whole_command(commands[name](str(Path(scratch) / f"s{repeat}-{len(times[name])}"))))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=ROOT / "tests/data/kineto/a100_train_rank0.json.gz")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    hta = hta_python()
    runs = {"prof": (sys.executable, PROF_SNIPPET, None), "prof, 1 process": (sys.executable, PROF_SNIPPET, "1"),
            "HTA 0.5.0": (hta, HTA_SNIPPET, None)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    rows = {}
    for repeat in range(args.repeats):
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))  # alternated: neither always runs first
        for name in order:
            python, snippet, workers = runs[name]
            seconds, rows[name] = timed(python, snippet, args.trace, workers)
            times[name].append(seconds)
    base = statistics.median(times["HTA 0.5.0"])
    print(f"{args.trace.name}, {args.repeats} alternated repeats, parse time in a fresh interpreter; "
          f"prof as shipped used {share_count(args.trace.read_bytes())} process(es) on {usable_cores()} usable cores\n")
    print("| parser | median s | min | max | events | speed-up vs HTA |\n|---|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {max(values):.3f} | {rows[name]} | ×{base / median:.2f} |")
    whole = whole_commands(args.trace, args.repeats, hta)
    prof_median = statistics.median(whole["prof import (whole command, report included)"])
    print(f"\nwhole commands, wall time start to exit, {args.repeats} alternated repeats\n")
    print("| command | median s | min | max | prof import faster by |\n|---|---|---|---|---|")
    for name, values in whole.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {max(values):.3f} | ×{median / prof_median:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
