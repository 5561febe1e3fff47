"""Event factories for rule unit tests: small timelines built in code (stage spans of requests,
client and wire requests, py-spy samples and GIL snapshots, psutil counters, ORT nodes, kineto
spans) and an analysis context over them. No server, no process: each rule's evidence is laid
out exactly, so a test says which evidence fires a rule and which does not."""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np
import pandas as pd

from profiler.analysis.attribution import attribute_samples
from profiler.analysis.calibration_model import Calibration, HostKey
from profiler.analysis.context import AnalysisContext
from profiler.timeline import StackTable, gpu_pid, make_events, merge_events

T0 = 1_800_000_000_000_000_000
MS = 1_000_000
PID = 4242
HOST = {"cores": 2}


def requests(n: int, stages_ms: dict[str, float], *, gap_ms: float | None = None, overlap: int = 1,
             batch_per_request: bool = True, loads_ms: Iterable[tuple[float, float]] = ()) -> pd.DataFrame:
    """Stage spans of ``n`` requests, each with ``stages_ms`` one after another. ``overlap``
    requests run at once (each group starts together); groups follow each other (``gap_ms``
    apart, default: back to back). ``loads_ms``: model_load spans (start ms, duration ms)."""
    per_request = sum(stages_ms.values())
    step = per_request if gap_ms is None else gap_ms
    rows = []
    for i in range(n):
        t = T0 + int((i // overlap) * step * MS)
        for stage, ms in stages_ms.items():
            rows.append((t, int(ms * MS), stage, f"r{i}", i if batch_per_request else -1, 10 + i % overlap))
            t += int(ms * MS)
    for start, ms in loads_ms:
        rows.append((T0 + int(start * MS), int(ms * MS), "model_load", None, -1, 9))
    frame = pd.DataFrame(rows, columns=["ts", "dur", "stage", "rid", "batch", "tid"])
    return make_events(ts_ns=frame["ts"].to_numpy(), dur_ns=frame["dur"].to_numpy(), source="stages", kind="span",
                       name=frame["stage"].to_numpy(), stage=frame["stage"].to_numpy(), pid=PID,
                       tid=frame["tid"].to_numpy(), request_id=frame["rid"].to_numpy(),
                       batch_id=frame["batch"].to_numpy())


def client(latencies_ms: Iterable[float], *, concurrency: int = 1) -> pd.DataFrame:
    """The load generator's answered requests, ``concurrency`` at a time, back to back."""
    latencies = np.asarray(list(latencies_ms), dtype=float)
    starts, clock = [], np.zeros(concurrency)
    for latency in latencies:
        lane = int(np.argmin(clock))
        starts.append(clock[lane])
        clock[lane] += latency
    return make_events(ts_ns=T0 + (np.asarray(starts) * MS).astype(np.int64), dur_ns=(latencies * MS).astype(np.int64),
                       source="loadgen", kind="span", name="request", pid=1, tid=1,
                       request_id=[f"c{i}" for i in range(len(latencies))], args='{"status":200}')


def wire(bodies: Iterable[str], latency_ms: float = 20.0, *, concurrency: int = 1,
         image: tuple[str, int, int] | None = None) -> pd.DataFrame:
    """Requests on the wire, one per body hash, ``concurrency`` at a time (each carrying an
    image of this format and size, read from its header, when ``image`` is given)."""
    bodies = list(bodies)
    ts = T0 + (np.arange(len(bodies)) // concurrency * latency_ms * MS).astype(np.int64)
    args = [json.dumps({"status": 200, "request_bytes": 50_000, "response_bytes": 100, "body_sha256": body,
                        "ttfb_ns": int(latency_ms * MS * 0.9), "content_type": "image/jpeg", "conn": i % concurrency,
                        "outcome": "complete", "image": list(image) if image else None}, separators=(",", ":"))
            for i, body in enumerate(bodies)]
    return make_events(ts_ns=ts, dur_ns=int(latency_ms * MS), source="http", kind="span", name="POST /classify",
                       pid=PID, tid=-1, request_id=[f"w{i}" for i in range(len(bodies))], args=args)


def samples(stacks: StackTable, stacks_ms: Iterable[tuple[list[tuple[str, str, int]], float, int]]) -> pd.DataFrame:
    """py-spy samples: for each (stack root first, milliseconds, thread id), that many 10 ms
    stretches on that thread."""
    ts, dur, tids, ids = [], [], [], []
    clock: dict[int, int] = {}
    for frames, ms, tid in stacks_ms:
        leaf = stacks.intern(frames)
        for _ in range(int(ms // 10)):
            ts.append(T0 + clock.get(tid, 0))
            clock[tid] = clock.get(tid, 0) + 10 * MS
            dur.append(10 * MS), tids.append(tid), ids.append(leaf)
    return make_events(ts_ns=ts, source="pyspy", kind="sample", name="s", dur_ns=dur, pid=PID, tid=tids,
                       stack_id=ids, value=1.0)


def snapshots(stacks: StackTable, per_snapshot: list[tuple[str, list[tuple[str, str, int]]]], count: int) -> pd.DataFrame:
    """GIL snapshots: ``count`` dumps 500 ms apart, each with a (state, stack) per thread."""
    ts, names, tids, ids = [], [], [], []
    for n in range(count):
        for tid, (state, frames) in enumerate(per_snapshot, start=100):
            ts.append(T0 + n * 500 * MS), names.append(state), tids.append(tid), ids.append(stacks.intern(frames))
    return make_events(ts_ns=ts, source="pyspy", kind="instant", name=names, pid=PID, tid=tids, stack_id=ids)


def counters(name: str, per_thread: dict[int, float], ticks: int = 20) -> pd.DataFrame:
    """A psutil counter per thread (``tid`` -1: the process), read ``ticks`` times, 100 ms apart."""
    ts, tids, values = [], [], []
    for n in range(ticks):
        for tid, value in per_thread.items():
            ts.append(T0 + n * 100 * MS), tids.append(tid), values.append(value)
    return make_events(ts_ns=ts, source="proc", kind="counter", name=name, pid=PID, tid=tids, value=values)


def ort_nodes(ops: Iterable[tuple[str, float]], provider: str = "CPUExecutionProvider", repeats: int = 10) -> pd.DataFrame:
    """ONNX Runtime node spans: each (op type, ms) once per run, runs one after another."""
    ops = list(ops)
    ts, dur, names, args = [], [], [], []
    t = T0
    for _ in range(repeats):
        for i, (op, ms) in enumerate(ops):
            ts.append(t), dur.append(int(ms * MS)), names.append(f"{op}_{i}_kernel_time")
            args.append(json.dumps({"cat": "Node", "op": op, "provider": provider}, separators=(",", ":")))
            t += int(ms * MS)
    return make_events(ts_ns=ts, dur_ns=dur, source="ort", kind="span", name=names, pid=PID, tid=7, args=args,
                       stage="inference")


def kineto(spans: Iterable[tuple[str, str, float, float, dict[str, Any]]], device: int | None = None) -> pd.DataFrame:
    """torch profiler spans: (category, name, start ms, duration ms, extra args); on GPU
    ``device``'s lane when given, else the host thread."""
    spans = list(spans)
    args = [json.dumps({"cat": cat, **extra}, separators=(",", ":")) for cat, _, _, _, extra in spans]
    return make_events(ts_ns=[T0 + int(start * MS) for _, _, start, _, _ in spans],
                       dur_ns=[int(ms * MS) for _, _, _, ms, _ in spans], source="torch", kind="span",
                       name=[name for _, name, _, _, _ in spans], pid=gpu_pid(device) if device is not None else PID,
                       tid=7, args=args)


def calibration(fp32_ms: float = 20.0, int8_speedup: float = 2.5, batch8_speedup: float = 1.6,
                runtime_ms: dict[str, float] | None = None, ort_opt_speedup: float = 1.2) -> Calibration:
    """A calibration with these figures (what a measurement on some host could have given)."""
    batch_ms = {b: fp32_ms * b / (1 + (batch8_speedup - 1) * (b - 1) / 7) for b in (1, 2, 4, 8, 16)}
    return Calibration(host=HostKey("test", "cpu", 2, "2.13", "1.23", 1), artifact_sha256="0" * 64, batch_ms=batch_ms,
                       precision_speedup={"int8-static@1": int8_speedup, "int8-static@8": int8_speedup * 1.1},
                       runtime_ms=runtime_ms or {"ort": fp32_ms, "torch-eager": fp32_ms * 1.6}, ort_opt_speedup=ort_opt_speedup,
                       measured_at="2026-12-07", repeats=3, spread={})


def context(*frames: pd.DataFrame, stacks: StackTable | None = None, meta: dict | None = None,
            calibrated: Calibration | None = None) -> AnalysisContext:
    """An analysis context over these events (py-spy rows attributed by the packaged signatures;
    no host timings)."""
    events = merge_events([f for f in frames if len(f)])
    return AnalysisContext(events, stacks or StackTable(), {"host": HOST, **(meta or {})},
                           attribute=lambda rows, table: attribute_samples(rows, table, kinds=("sample", "instant")),
                           calibration_loader=(lambda: calibrated) if calibrated is not None else None,
                           host_timings=False)


# Stacks as py-spy would show them, root first.
HANDLER = [("Thread._bootstrap", "/usr/lib/python3.11/threading.py", 995),
           ("BaseHTTPRequestHandler.handle_one_request", "/usr/lib/python3.11/http/server.py", 424),
           ("Handler.do_POST", "/srv/app.py", 30)]
TORCH_FORWARD = [*HANDLER, ("Module._call_impl", "/venv/site-packages/torch/nn/modules/module.py", 1527),
                 ("Conv2d.forward", "/venv/site-packages/torch/nn/modules/conv.py", 460)]
PY_WORK = [*HANDLER, ("forward", "/srv/app.py", 12)]
ENCODE = [*HANDLER, ("dumps", "/usr/lib/python3.11/json/__init__.py", 231),
          ("JSONEncoder.encode", "/usr/lib/python3.11/json/encoder.py", 200)]
IDLE = [("Thread._bootstrap", "/usr/lib/python3.11/threading.py", 995),
        ("BaseServer.serve_forever", "/usr/lib/python3.11/socketserver.py", 233),
        ("select", "/usr/lib/python3.11/selectors.py", 415)]
