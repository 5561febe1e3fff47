"""Chrome Trace Event JSON (for Perfetto and chrome://tracing).

Each (source, pid, tid) lane becomes its own named thread, so spans of different sources on
one OS thread (a stage span and the ORT nodes inside it, say) never break each other's
nesting. Timestamps are rebased to the first event so float µs keep sub-µs precision.
Spans are ``X`` events, counters ``C`` events, sampled stacks nested ``X`` events (one per
frame, merged while the frame stays on the stack), and each request's ``queue`` span is
joined to the inference of its batch by a flow arrow.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from profiler.timeline import StackTable

_GPU_BASE = -100


def render_chrome_trace(events: pd.DataFrame, stacks: StackTable | None = None,
                        process_names: dict[int, str] | None = None) -> bytes:
    if events.empty:
        return json.dumps({"traceEvents": [], "displayTimeUnit": "ms"}).encode()
    origin = int(events["ts_ns"].min())
    lanes: dict[tuple[str, int, int], int] = {}
    out: list[dict[str, Any]] = []
    process_names = process_names or {}
    for kind, group in events.groupby("kind", observed=True, sort=False):
        if kind in ("span", "instant"):
            out.extend(_spans(group, origin, lanes))
        elif kind == "counter":
            out.extend(_counters(group, origin))
        elif kind == "sample" and stacks is not None:
            out.extend(_samples(group, origin, lanes, stacks))
    out.extend(_flows(events, origin, lanes))
    out.extend(_metadata(events, lanes, process_names))
    trace = {"traceEvents": out, "displayTimeUnit": "ms", "otherData": {"origin_epoch_ns": origin,
                                                                         "exporter": "prof"}}
    return json.dumps(trace, separators=(",", ":")).encode()


def _lane(lanes: dict[tuple[str, int, int], int], source: str, pid: int, tid: int) -> int:
    key = (source, pid, tid)
    if key not in lanes:
        lanes[key] = len(lanes) + 1
    return lanes[key]


def _us(ns: np.ndarray | int, origin: int) -> Any:
    return (np.asarray(ns, dtype=np.int64) - origin) / 1000.0


def _spans(group: pd.DataFrame, origin: int, lanes: dict) -> list[dict]:
    ts = _us(group["ts_ns"].to_numpy(), origin)
    dur = group["dur_ns"].to_numpy() / 1000.0
    sublane = _pack_sublanes(group)
    out = []
    for i, row in enumerate(group.itertuples(index=False)):
        args: dict[str, Any] = json.loads(row.args) if isinstance(row.args, str) else {}
        if isinstance(row.request_id, str):
            args["request_id"] = row.request_id
        if row.batch_id >= 0:
            args["batch_id"] = int(row.batch_id)
        source = str(row.source) if sublane[i] == 0 else f"{row.source} +{sublane[i]}"
        event = {"ph": "X" if row.kind == "span" else "i", "name": str(row.name), "cat": str(row.source),
                 "pid": int(row.pid), "tid": _lane(lanes, source, int(row.pid), int(row.tid)),
                 "ts": float(ts[i]), "args": args}
        if row.kind == "span":
            event["dur"] = float(dur[i])
        else:
            event["s"] = "t"
        out.append(event)
    return out


def _pack_sublanes(group: pd.DataFrame) -> np.ndarray:
    """Sub-lane per span so that spans on one lane always nest: a span that overlaps an open
    one without fitting inside it (a CUDA sync across a memcpy, say) moves to the next
    sub-lane of the same thread."""
    result = np.zeros(len(group), dtype=np.int64)
    starts = group["ts_ns"].to_numpy()
    ends = starts + group["dur_ns"].to_numpy()
    lane_codes, _ = pd.factorize(pd.MultiIndex.from_arrays([group["source"].astype(str), group["pid"], group["tid"]]))
    for positions in pd.Series(np.arange(len(group))).groupby(lane_codes).indices.values():
        order = positions[np.lexsort((-ends[positions], starts[positions]))]
        stacks: list[list[int]] = []
        for i in order:
            for level, stack in enumerate(stacks):
                while stack and ends[stack[-1]] <= starts[i]:
                    stack.pop()
                if not stack or ends[i] <= ends[stack[-1]]:
                    stack.append(i)
                    result[i] = level
                    break
            else:
                stacks.append([i])
                result[i] = len(stacks) - 1
    return result


def _counters(group: pd.DataFrame, origin: int) -> list[dict]:
    ts = _us(group["ts_ns"].to_numpy(), origin)
    names = group["name"].astype(str).to_numpy()
    suffix = np.where(group["tid"].to_numpy() >= 0, " tid " + group["tid"].astype(str).to_numpy(), "")
    return [{"ph": "C", "name": names[i] + suffix[i], "cat": "counter", "pid": int(pid), "ts": float(ts[i]),
             "args": {"value": float(value)}}
            for i, (pid, value) in enumerate(zip(group["pid"].to_numpy(), group["value"].to_numpy()))]


def _samples(group: pd.DataFrame, origin: int, lanes: dict, stacks: StackTable) -> list[dict]:
    """Nested frame slices per lane; a frame that stays on the stack across consecutive
    stretches is one slice, as in a flame chart."""
    out = []
    for (source, pid, tid), lane_events in group.groupby(["source", "pid", "tid"], observed=True, sort=False):
        lane = _lane(lanes, str(source), int(pid), int(tid))
        open_frames: list[tuple[tuple[str, str, int], int]] = []  # (frame, start ns)
        last_end = None
        rows = lane_events.sort_values("ts_ns")
        for ts, dur, stack_id in zip(rows["ts_ns"].to_numpy(), rows["dur_ns"].to_numpy(), rows["stack_id"].to_numpy()):
            frames = stacks.frames_of(int(stack_id))
            keep = 0
            if last_end is not None and ts <= last_end:
                while keep < min(len(frames), len(open_frames)) and open_frames[keep][0] == frames[keep]:
                    keep += 1
            end_at = last_end if last_end is not None else ts
            for frame, start in reversed(open_frames[keep:]):
                out.append(_frame_slice(frame, start, end_at, origin, int(pid), lane))
            open_frames = open_frames[:keep] + [(f, int(ts)) for f in frames[keep:]]
            last_end = int(ts + dur)
        for frame, start in reversed(open_frames):
            out.append(_frame_slice(frame, start, last_end or start, origin, int(pid), lane))
    return out


def _frame_slice(frame: tuple[str, str, int], start: int, end: int, origin: int, pid: int, lane: int) -> dict:
    return {"ph": "X", "name": frame[0], "cat": "pyspy", "pid": pid, "tid": lane, "ts": (start - origin) / 1000.0,
            "dur": (end - start) / 1000.0, "args": {"file": frame[1], "line": frame[2]}}


def _flows(events: pd.DataFrame, origin: int, lanes: dict) -> list[dict]:
    """request queue span -> its batch's inference span."""
    spans = events[(events["source"] == "stages") & (events["kind"] == "span") & (events["batch_id"] >= 0)]
    queue = spans[spans["stage"] == "queue"]
    inference = spans[(spans["stage"] == "inference") & spans["request_id"].isna()]
    target = {int(b): (int(ts), int(pid), int(tid)) for b, ts, pid, tid in
              zip(inference["batch_id"], inference["ts_ns"], inference["pid"], inference["tid"])}
    out = []
    for n, row in enumerate(queue.itertuples(index=False)):
        batch = target.get(int(row.batch_id))
        if batch is None:
            continue
        flow_id = n + 1
        start_ts = row.ts_ns + max(row.dur_ns - 1, 0)
        out.append({"ph": "s", "id": flow_id, "name": "batch", "cat": "flow", "pid": int(row.pid),
                    "tid": _lane(lanes, "stages", int(row.pid), int(row.tid)), "ts": (start_ts - origin) / 1000.0})
        out.append({"ph": "f", "bp": "e", "id": flow_id, "name": "batch", "cat": "flow", "pid": batch[1],
                    "tid": _lane(lanes, "stages", batch[1], batch[2]), "ts": (batch[0] - origin) / 1000.0})
    return out


def _metadata(events: pd.DataFrame, lanes: dict, process_names: dict[int, str]) -> list[dict]:
    out = []
    for pid in sorted({key[1] for key in lanes} | set(int(p) for p in events["pid"].unique())):
        name = process_names.get(pid) or (f"GPU {_GPU_BASE - pid}" if pid <= _GPU_BASE else f"pid {pid}")
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})
    for (source, pid, tid), lane in lanes.items():
        label = f"{source} · {'stream' if pid <= _GPU_BASE else 'tid'} {tid}"
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": lane, "args": {"name": label}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": lane, "args": {"sort_index": lane}})
    return out
