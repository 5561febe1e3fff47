"""Cost of one stage span: SpanRecorder.record() vs the disabled recorder vs an empty call.

Each variant records N spans in a tight loop; repeats alternate the variants so they see
the same machine state. Reports the median and spread of ns per span.

    .venv/bin/python benchmarks/span_cost.py [--spans 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probes.stages import NullRecorder, SpanRecorder, Stage  # noqa: E402


def per_span_ns(recorder, n: int) -> float:
    """Request ids repeat as in a server (each request has several spans)."""
    record, now, stage = recorder.record, time.perf_counter_ns, Stage.DECODE
    ids = [f"req-{i}" for i in range(1024)]
    t0 = now()
    for i in range(n):
        record(stage, t0, t0 + 1, ids[i & 1023], -1)
    return (now() - t0) / n


def empty_call_ns(n: int) -> float:
    def record(stage, start, end, request, batch):
        return None

    now, stage = time.perf_counter_ns, Stage.DECODE
    t0 = now()
    for i in range(n):
        record(stage, t0, t0 + 1, "req", -1)
    return (now() - t0) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"SpanRecorder.record": [], "NullRecorder.record": [], "empty function": []}
    with tempfile.TemporaryDirectory() as out:
        # Capacity below the span count so the numbers include spilling full buffers to disk.
        recorder = SpanRecorder(out, capacity=args.spans // 2)
        for _ in range(args.repeats):
            results["SpanRecorder.record"].append(per_span_ns(recorder, args.spans))
            results["NullRecorder.record"].append(per_span_ns(NullRecorder(), args.spans))
            results["empty function"].append(empty_call_ns(args.spans))
        recorder.flush()
        files = len(list(Path(out).glob("spans-*.npz")))
    print(f"{args.spans} spans x {args.repeats} alternated repeats ({files} span files written)\n")
    print("| variant | median ns/span | min | max |\n|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
