"""A synthetic 1M-event session: ingest + merge time and peak RSS, then Chrome export time.

The session is made of real probe artifacts written by the real writers: 800k stage spans
(SpanRecorder), an ONNX Runtime profile of 200k node events, and a proc sampler file. Each
measured step runs in a fresh interpreter so its peak RSS is its own.

    .venv/bin/python benchmarks/timeline_scale.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEP = """
import resource, sys, time
from pathlib import Path
from profiler.session import Session, load
from profiler.session import build_timeline
from profiler.renderers.chrome import write_chrome_trace
path = Path(sys.argv[1])
t = time.perf_counter()
if sys.argv[2] == "ingest":
    for merged in ("timeline.parquet", "stack_frames.parquet", "stack_nodes.parquet"):
        (path / merged).unlink(missing_ok=True)  # each run ingests a fresh session
    session = load(path, rebuild=False)
    build_timeline(session)
    n = len(session.timeline)
else:
    session = load(path)
    with open(path / "trace.json", "wb") as out:  # streamed, as `prof export` writes it
        write_chrome_trace(session.timeline, out, session.stacks)
    n = len(session.timeline)
print(f"{time.perf_counter() - t:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} {n}")
"""


def make_session(path: Path, events: int) -> None:
    from probes.stages import SpanRecorder, Stage
    from profiler.session import Session

    session = Session.create(path, command=["synthetic"])
    spans = int(events * 0.8)
    recorder = SpanRecorder(session.raw_dir("stages"), capacity=1 << 18)
    t0 = time.perf_counter_ns()
    stages = [Stage.RECEIVE, Stage.DESERIALIZE, Stage.DECODE, Stage.PREPROCESS, Stage.QUEUE, Stage.POSTPROCESS,
              Stage.SERIALIZE, Stage.INFERENCE]
    for i in range(spans):
        start = t0 + i * 10_000
        recorder.record(stages[i % 8], start, start + 9_000, f"req-{i // 8}" if i % 8 < 7 else None, i // 64)
    recorder.flush()
    nodes = events - spans
    ort_dir = session.raw_dir("ort")
    profile = ort_dir / "ort-1.json"
    with open(profile, "w") as out:
        out.write("[\n")
        for i in range(nodes):
            sep = "," if i else ""
            out.write(f'{sep}{{"cat":"Node","pid":1,"tid":1,"dur":40,"ts":{i * 50},"ph":"X",'
                      f'"name":"conv_{i % 60}_kernel_time","args":{{"op_name":"Conv","provider":"CPUExecutionProvider"}}}}\n')
        out.write("]\n")
    (ort_dir / "ort-1.json.anchor.json").write_text(json.dumps({"start_ns": time.time_ns(), "pid": 1}))


def run_step(path: Path, step: str) -> tuple[float, int, int]:
    result = subprocess.run([sys.executable, "-c", STEP, str(path), step], capture_output=True, text=True, cwd=ROOT,
                            check=True)
    seconds, rss_mb, rows = result.stdout.split()
    return float(seconds), int(rss_mb), int(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each step, the steps taking turns")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, int, int]]] = {"ingest": [], "chrome": []}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "session"
        make_session(path, args.events)
        for _ in range(args.repeats):
            for step in runs:
                runs[step].append(run_step(path, step))
        size = (path / "trace.json").stat().st_size / 1e6
    print(f"synthetic session, {runs['ingest'][0][2]:,} events, {args.repeats} runs per step "
          "(fresh interpreter each), median [min..max]\n")
    print("| step | seconds | peak RSS MB | target |\n|---|---|---|---|")
    labels = {"ingest": ("ingest + merge + save", "≤ 3 s, ≤ 300 MB"),
              "chrome": (f"load + Chrome export + write ({size:.0f} MB)", "≤ 3 s")}
    for step, results in runs.items():
        seconds = sorted(r[0] for r in results)
        rss = sorted(r[1] for r in results)
        label, target = labels[step]
        print(f"| {label} | {seconds[len(seconds) // 2]:.2f} [{seconds[0]:.2f}..{seconds[-1]:.2f}] | "
              f"{rss[len(rss) // 2]} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
