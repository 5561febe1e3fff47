"""ResNet-18 throughput on this machine: input size x batch size x runtime.

Runtimes: torch eager (fp32), ONNX Runtime fp32 (graph optimization ALL), ONNX Runtime
INT8 static (QDQ), and the CUDA / TensorRT execution providers where a GPU is present.
Each cell runs for a bounded time after a warm-up call; FPS is images per second from the
median call time, with the spread (min..max FPS) shown. Output: a Markdown table.

    .venv/bin/python benchmarks/model_table.py [--sizes 224,256,384,512] [--batches 1,4,8,16,32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samples.model.engines import EngineSettings, load_engine  # noqa: E402


def time_calls(run, budget_s: float, min_calls: int = 3, max_calls: int = 50) -> list[float]:
    run()  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def runtimes() -> list[tuple[str, EngineSettings]]:
    threads = os.cpu_count() or 1
    out = [
        ("torch eager fp32", EngineSettings(backend="torch-eager", intra_op_threads=threads)),
        ("ORT fp32 (ALL)", EngineSettings(backend="ort", intra_op_threads=threads)),
        ("ORT int8 static", EngineSettings(backend="ort", precision="int8-static", intra_op_threads=threads)),
    ]
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        out.append(("ORT CUDA fp16", EngineSettings(backend="ort", precision="fp16", device="cuda")))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,256,384,512")
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per cell after warm-up")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for size in sizes:
        engines = []
        for name, settings in runtimes():
            settings = EngineSettings(**{**settings.__dict__, "input_size": size})
            try:
                engines.append((name, load_engine(settings)))
            except Exception as exc:  # a runtime unavailable here (e.g. CUDA EP without a GPU) is reported
                print(f"skip {name} at {size}: {exc}", file=sys.stderr)
        for batch in batches:
            x = np.random.default_rng(size * 100 + batch).standard_normal((batch, 3, size, size)).astype(np.float32)
            cells = {}
            for name, engine in engines:
                times = time_calls(lambda: engine.fetch_output(engine.infer(engine.stage_input(x))), args.budget)
                median = statistics.median(times)
                cells[name] = (batch / median, batch / max(times), batch / min(times), len(times))
            rows.append((size, batch, cells))
            print(f"size {size} batch {batch}: " + ", ".join(f"{n} {v[0]:.1f} fps" for n, v in cells.items()),
                  file=sys.stderr, flush=True)
    names = [name for name, _ in runtimes()]
    lines = [f"ResNet-18 FPS on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')} (median of timed calls; min..max in brackets; speedup vs torch eager)", "",
             "| size | batch | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for size, batch, cells in rows:
        base = cells.get(names[0], (float("nan"),))[0]
        parts = []
        for name in names:
            if name not in cells:
                parts.append("n/a")
                continue
            fps, lo, hi, n = cells[name]
            parts.append(f"{fps:.1f} [{lo:.0f}..{hi:.0f}] ×{fps / base:.2f}")
        lines.append(f"| {size} | {batch} | " + " | ".join(parts) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
