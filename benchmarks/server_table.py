"""End-to-end table through the real sample server: req/s and p50/p99 per configuration.

Each row starts the server with its knobs, warms it up, drives closed-loop load with the
same image mix, and stops it. Rows that compare a knob (cache, batching, draft decode) use
the same load so the difference is the knob's.

    .venv/bin/python benchmarks/server_table.py [--duration 15] [--concurrency 8] [--rounds 2] [--only REGEX]

With ``--rounds N`` every row is measured N times, the rows taking turns (round robin), so
slow drift of the machine hits all rows alike; the table shows the median and the range.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samples.loadgen.runner import LoadRunner, LoadSpec  # noqa: E402
from samples.loadgen.summary import summarize  # noqa: E402
from samples.loadgen.workload import ImageMix  # noqa: E402
from samples.sample_server.process import ServerProcess  # noqa: E402

# (label, server knobs, image sizes, duplicate fraction)
ROWS: tuple[tuple[str, list[str], str, float], ...] = (
    ("ort fp32", [], "640x480", 0.0),
    ("ort fp32, batching 8 / 5 ms", ["--max-batch", "8", "--max-wait-ms", "5"], "640x480", 0.0),
    ("ort int8-static", ["--precision", "int8-static"], "640x480", 0.0),
    ("ort int8-dynamic", ["--precision", "int8-dynamic"], "640x480", 0.0),
    ("ort fp32, graph opt disabled", ["--ort-opt-level", "disable"], "640x480", 0.0),
    ("torch eager", ["--backend", "torch-eager"], "640x480", 0.0),
    ("torch inference_mode + channels_last", ["--backend", "torch-inference"], "640x480", 0.0),
    ("torchscript", ["--backend", "torchscript"], "640x480", 0.0),
    ("torch.compile", ["--backend", "torch-compile"], "640x480", 0.0),
    ("ort fp32, 50% repeats, cache off", [], "640x480", 0.5),
    ("ort fp32, 50% repeats, cache lru", ["--cache", "lru"], "640x480", 0.5),
    ("ort fp32, 1920x1080 JPEG, draft off", [], "1920x1080", 0.0),
    ("ort fp32, 1920x1080 JPEG, draft on", ["--decode-draft", "1"], "1920x1080", 0.0),
)


def measure(knobs: list[str], sizes: str, duplicates: float, args: argparse.Namespace) -> dict:
    with ServerProcess(knobs + ["--log-level", "warning"]) as server:
        spec = LoadSpec(url=f"{server.url}/classify", concurrency=args.concurrency, duration_s=args.duration,
                        warmup_s=args.warmup, seed=1)
        runner = LoadRunner(spec, ImageMix(sizes.split(","), ["jpeg"], duplicates, seed=1))
        state = asyncio.run(runner.run())
    return summarize(state.records).as_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", help="regular expression on row labels")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [row for row in ROWS if not args.only or re.search(args.only, row[0])]
    results: dict[str, list[dict]] = {label: [] for label, *_ in rows}
    failures: dict[str, str] = {}
    for round_index in range(args.rounds):
        for label, knobs, sizes, duplicates in rows:
            try:
                summary = measure(knobs, sizes, duplicates, args)
            except Exception as exc:  # one broken configuration must not lose the others' rows
                failures[label] = str(exc).splitlines()[0]
                continue
            results[label].append(summary)
            print(f"round {round_index + 1}: {label}: {summary['throughput_rps']:.1f} req/s", file=sys.stderr,
                  flush=True)
    table = render(results, failures, args)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


def render(results: dict[str, list[dict]], failures: dict[str, str], args: argparse.Namespace) -> str:
    lines = [f"Sample server end to end, closed loop concurrency {args.concurrency}, {args.duration:.0f} s per "
             f"measurement after {args.warmup:.0f} s warm-up, {args.rounds} round(s) taking turns; "
             f"median [min..max] over rounds, {time.strftime('%Y-%m-%d')}", "",
             "| configuration | req/s | p50 ms | p99 ms | requests ok / sent |", "|---|---|---|---|---|"]
    for label, runs in results.items():
        if not runs:
            lines.append(f"| {label} | failed: {failures.get(label, 'no run')} | | | |")
            continue
        cells = []
        for key in ("throughput_rps", "p50_ms", "p99_ms"):
            values = [r[key] for r in runs]
            cells.append(f"{statistics.median(values):.1f} [{min(values):.0f}..{max(values):.0f}]")
        ok, sent = sum(r["ok"] for r in runs), sum(r["requests"] for r in runs)
        lines.append(f"| {label} | {' | '.join(cells)} | {ok} / {sent} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
