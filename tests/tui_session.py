"""A small, fully deterministic session for the TUI tests: a server that decodes, preprocesses,
queues and runs requests one at a time through an ORT model (nested node spans) while four
arrive together — batching is the fix the diagnosis should name, with client spans,
py-spy samples over a stack table, and a CPU counter — every timestamp fixed, so the
diagnosis and every view come out the same on every run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from profiler.session import Session
from profiler.timeline import StackTable, make_events, merge_events

T0 = 1_763_900_000_000_000_000  # fixed epoch ns
MS = 1_000_000
SERVER_PID, LOOP_TID, WORKER_TID, CLIENT_PID = 4242, 4242, 4250, 5000
REQUESTS = 48
GROUP = 4  # requests that arrive together
INFERENCE_MS = 20


def _inference_starts() -> list[int]:
    """One request at a time on the worker: each starts when it is ready and the last is done."""
    starts, free = [], 0
    for r in range(REQUESTS):
        group, slot = divmod(r, GROUP)
        ready = T0 + 50 * MS + group * 100 * MS + slot * 2 * MS + 8 * MS + slot * MS // 2 + MS // 10
        starts.append(max(ready, free))
        free = starts[-1] + INFERENCE_MS * MS
    return starts


def _request_spans() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    client = []
    starts = _inference_starts()
    for r in range(REQUESTS):
        group, slot = divmod(r, GROUP)
        batch = r
        arrive = T0 + 50 * MS + group * 100 * MS + slot * 2 * MS
        rid = f"req-{r:03d}"
        t = arrive
        for stage, dur in (("receive", 1 * MS), ("deserialize", MS // 10), ("decode", 3 * MS + slot * MS // 2),
                           ("preprocess", 4 * MS)):
            rows.append((t, dur, stage, LOOP_TID, rid, batch))
            t += dur
        inference_start = starts[r]
        rows.append((t, inference_start - t, "queue", LOOP_TID, rid, batch))
        rows.append((inference_start, INFERENCE_MS * MS, "inference", WORKER_TID, rid, batch))
        end = inference_start + INFERENCE_MS * MS
        rows.append((end, MS // 5, "postprocess", LOOP_TID, rid, batch))
        rows.append((end + MS // 5, MS // 2, "serialize", LOOP_TID, rid, batch))
        finish = end + MS // 5 + MS // 2
        client.append((arrive - MS // 2, finish - arrive + MS, rid))
    spans = pd.DataFrame(rows, columns=["ts", "dur", "name", "tid", "rid", "batch"])
    stages = make_events(ts_ns=spans["ts"].to_numpy(), dur_ns=spans["dur"].to_numpy(), source="stages", kind="span",
                         name=spans["name"].to_numpy(), stage=spans["name"].to_numpy(), pid=SERVER_PID,
                         tid=spans["tid"].to_numpy(), request_id=spans["rid"].to_numpy(),
                         batch_id=spans["batch"].to_numpy())
    loadgen = pd.DataFrame(client, columns=["ts", "dur", "rid"])
    clients = make_events(ts_ns=loadgen["ts"].to_numpy(), dur_ns=loadgen["dur"].to_numpy(), source="loadgen",
                          kind="span", name="request", pid=CLIENT_PID, tid=CLIENT_PID,
                          request_id=loadgen["rid"].to_numpy(), args='{"status":200}')
    return stages, clients


def _ort_spans() -> pd.DataFrame:
    """Per request, a model_run span holding Conv/Relu/Gemm node spans one after another."""
    ts, dur, names, args = [], [], [], []
    for start in _inference_starts():
        ts.append(start), dur.append(INFERENCE_MS * MS), names.append("model_run")
        args.append('{"cat":"Session"}')
        t = start + MS // 10
        for node, op, length in (("conv1", "Conv", 6), ("relu1", "Relu", 1), ("conv2", "Conv", 7),
                                 ("relu2", "Relu", 1), ("fc", "Gemm", 3)):
            ts.append(t), dur.append(length * MS), names.append(f"{node}_kernel_time")
            args.append(f'{{"cat":"Node","op":"{op}","provider":"CPUExecutionProvider"}}')
            t += length * MS
    return make_events(ts_ns=ts, dur_ns=dur, source="ort", kind="span", name=names, pid=SERVER_PID, tid=WORKER_TID,
                       stage="inference", args=args)


def _samples(stacks: StackTable) -> pd.DataFrame:
    app = "/srv/app/server.py"
    lib = "/usr/lib/python3/site-packages"
    handler = [("main", app, 10), ("handle", app, 40)]
    paths = {
        "decode": [*handler, ("decode_image", app, 60), ("ImageFile.load", f"{lib}/PIL/ImageFile.py", 250)],
        "preprocess": [*handler, ("preprocess", app, 80), ("Image.resize", f"{lib}/PIL/Image.py", 2200)],
        "inference": [("worker", app, 120), ("run_batch", app, 130),
                      ("InferenceSession.run", f"{lib}/onnxruntime/capi/session.py", 220)],
        "idle": [("main", app, 10), ("EpollSelector.select", "/usr/lib/python3.11/selectors.py", 468)],
    }
    leaf = {name: stacks.intern(frames) for name, frames in paths.items()}
    ts, tid, ids = [], [], []
    for i in range(600):
        t = T0 + 50 * MS + i * 2 * MS
        phase = (i * 2) % 100
        loop_leaf = leaf["decode"] if phase < 16 else leaf["preprocess"] if phase < 26 else leaf["idle"]
        ts += [t, t]
        tid += [LOOP_TID, WORKER_TID]
        ids += [loop_leaf, leaf["inference"] if 8 <= phase < 90 else leaf["idle"]]
    return make_events(ts_ns=ts, source="pyspy", kind="sample", name="sample", pid=SERVER_PID, tid=tid,
                       dur_ns=2 * MS, stack_id=ids, value=1.0)  # py-spy at 500 Hz: each sample a 2 ms stretch


def _counters() -> pd.DataFrame:
    ts = T0 + np.arange(0, 1300, 20) * MS
    values = 60.0 + 40.0 * np.sin(np.arange(len(ts)) / 3.0) ** 2
    return make_events(ts_ns=ts, source="proc", kind="counter", name="cpu_percent", pid=SERVER_PID, value=values)


def make_tui_session(path: Path) -> Path:
    """Write the session to ``path`` (a directory that does not exist yet) and return it."""
    session = Session.create(path, command=["prof", "run", "sample_server"], targets=[SERVER_PID])
    session.meta["host"] = {"cpu_count": 2, "machine": "x86_64", "system": "Linux"}
    session.meta["server"] = {"pid": SERVER_PID, "knobs": ["--max-batch", "4"]}
    stacks = StackTable()
    stages, clients = _request_spans()
    events = merge_events([stages, clients, _ort_spans(), _samples(stacks), _counters()])
    session.save_timeline(events, stacks)
    session.save_meta()
    (path / "meta.json").write_text(json.dumps(session.meta, indent=1, sort_keys=True, default=str))
    return path
