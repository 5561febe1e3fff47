"""``prof load [URL]`` / ``python -m samples.loadgen``: drive load at a classification server."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from samples import images
from samples.loadgen.runner import LoadRunner, LoadSpec, RunState, write_records
from samples.loadgen.summary import LoadSummary, summarize
from samples.loadgen.workload import PAYLOADS, ImageMix

EXAMPLES = """examples:
  prof load                                  start the sample server, load it 20 s, stop it
  prof load -- --max-batch 8                 the same with server knobs after --
  prof load http://127.0.0.1:8000/classify --concurrency 16 --duration 30
  prof load URL --rate 40 --duplicates 0.3   open loop, Poisson 40 req/s, 30% exact repeats
  prof load URL --payload msgpack --image-sizes 224,640x480,1920x1080 --formats jpeg,png
"""


def build_parser(prog: str = "python -m samples.loadgen") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, usage=f"{prog} [URL] [options] [-- server knobs]",
                                description="Drive HTTP load at an image-classification server and "
                                "report throughput and latency percentiles. With no URL, start the sample server "
                                "(with the knobs after --) for the run.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?", help="classify endpoint; omit to start the sample server for the run")
    p.add_argument("--duration", "-d", type=float, default=20.0, help="seconds to measure (default 20)")
    p.add_argument("--requests", "-n", type=int, help="stop after this many measured requests instead")
    add_load_options(p, warmup_s=2.0)
    p.add_argument("--records", type=Path, help="per-request records file (JSON Lines; default prof-out/...)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def add_load_options(group: argparse.ArgumentParser | argparse._ArgumentGroup, warmup_s: float) -> None:
    """The workload options shared by ``prof load`` and ``prof run``."""
    loop = group.add_mutually_exclusive_group()
    loop.add_argument("--concurrency", "-c", type=int, default=8, help="closed loop: clients in flight (default 8)")
    loop.add_argument("--rate", "-r", type=float, help="open loop: Poisson arrivals per second")
    group.add_argument("--warmup", type=float, default=warmup_s,
                       help=f"seconds of unmeasured warm-up (default {warmup_s:g})")
    group.add_argument("--payload", choices=PAYLOADS, default="raw", help="request body format (default raw)")
    group.add_argument("--accept", choices=("json", "msgpack"), default="json", help="response format to ask for")
    group.add_argument("--image-sizes", default="640x480", help="comma list of WxH or N (default 640x480)")
    group.add_argument("--formats", default="jpeg", help="comma list of jpeg,png,webp (default jpeg)")
    group.add_argument("--duplicates", type=float, default=0.0, help="fraction of exact repeats, 0..1 (default 0)")
    group.add_argument("--seed", type=int, default=0, help="image mix seed (default 0)")
    group.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")


def spec_from_args(args: argparse.Namespace, url: str) -> LoadSpec:
    duration = None if args.requests else args.duration
    return LoadSpec(url=url, concurrency=args.concurrency, rate=args.rate, duration_s=duration,
                    requests=args.requests, warmup_s=args.warmup, payload=args.payload,
                    accept_msgpack=args.accept == "msgpack", timeout_s=args.timeout, seed=args.seed)


def mix_from_args(args: argparse.Namespace) -> ImageMix:
    sizes = [s.strip() for s in args.image_sizes.split(",") if s.strip()]
    for size in sizes:
        images.parse_size(size)
    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in images.FORMATS]
    if unknown:
        raise ValueError(f"unknown image format(s) {', '.join(unknown)}: use jpeg, png, webp")
    return ImageMix(sizes, formats, args.duplicates, args.seed)  # type: ignore[arg-type]


async def _run_with_progress(runner: LoadRunner, console: Console, quiet: bool) -> RunState:
    spec = runner.spec
    total = spec.duration_s if spec.duration_s is not None else float(spec.requests or 0)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                  TimeElapsedColumn(), console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("warm-up", total=total, stats="")
        job = asyncio.create_task(runner.run())
        while not job.done():
            await asyncio.wait({job}, timeout=0.25)
            state = runner.state
            measuring = time.monotonic() >= state.measure_from
            done = [r for r in state.measured()]
            ok = sum(r.status == 200 for r in done)
            elapsed = max(time.monotonic() - state.measure_from, 1e-9) if measuring else 0.0
            completed = elapsed if spec.duration_s is not None else len(done)
            stats = f"{ok} ok  {len(done) - ok} err  {ok / elapsed if elapsed else 0:.1f} req/s  {state.in_flight} in flight"
            progress.update(task, completed=min(completed, total), description="load" if measuring else "warm-up",
                            stats=stats)
        return job.result()


def print_summary(summary: LoadSummary, console: Console, records_path: Path | None) -> None:
    table = Table(title="load summary", show_header=False)
    table.add_row("requests (measured)", f"{summary.requests}  ({summary.ok} ok)")
    table.add_row("throughput", f"{summary.throughput_rps:.1f} req/s over {summary.duration_s:.1f} s")
    table.add_row("latency p50 / p95 / p99", f"{summary.p50_ms:.1f} / {summary.p95_ms:.1f} / {summary.p99_ms:.1f} ms")
    table.add_row("duplicate fraction sent", f"{summary.duplicate_fraction:.3f}")
    if summary.errors:
        table.add_row("errors", ", ".join(f"{k}: {v}" for k, v in sorted(summary.errors.items())))
    if summary.dropped:
        table.add_row("arrivals dropped (in-flight cap)", str(summary.dropped))
    if records_path:
        table.add_row("records", str(records_path))
    console.print(table)


def run_load(args: argparse.Namespace, url: str, console: Console) -> LoadSummary:
    runner = LoadRunner(spec_from_args(args, url), mix_from_args(args))
    records_path = args.records or Path("prof-out") / f"loadgen-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    try:
        state = asyncio.run(_run_with_progress(runner, console, args.quiet))
    finally:
        # Whatever finished before an interruption is kept.
        write_records(runner.state.records, records_path)
    spec = runner.spec
    if spec.duration_s is not None and time.monotonic() < state.measure_from + spec.duration_s - 0.5:
        raise KeyboardInterrupt  # Ctrl-C cancelled the run, and asyncio returned what it had
    summary = summarize(state.records, state.dropped)
    print_summary(summary, console, records_path)
    return summary


def main(argv: list[str] | None = None, prog: str = "python -m samples.loadgen") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    knobs: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, knobs = argv[:cut], argv[cut + 1 :]
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    console, errors = Console(), Console(stderr=True)
    try:
        mix_from_args(args)  # validate before starting anything
        if args.url:
            if knobs:
                parser.error("server knobs after -- apply only when no URL is given")
            summary = run_load(args, args.url, console)
        else:
            summary = _load_sample_server(args, knobs, console)
    except (ValueError, OSError) as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted: the records of finished requests are kept")
        return 130
    return 0 if summary.ok else 1


def _load_sample_server(args: argparse.Namespace, knobs: list[str], console: Console) -> LoadSummary:
    from samples.sample_server.process import ServerProcess, ServerStartError

    server = ServerProcess(knobs)
    with console.status(f"starting the sample server {' '.join(knobs)} (first run builds the model, ~30 s)"):
        try:
            server.start()
        except ServerStartError as exc:
            raise ValueError(str(exc)) from None
    try:
        console.print(f"sample server pid {server.pid} at {server.url}  (log {server.log_path})")
        return run_load(args, f"{server.url}/classify", console)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
