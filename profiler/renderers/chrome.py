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
import orjson
import pandas as pd

from profiler.timeline import StackTable

_GPU_BASE = -100


def render_chrome_trace(events: pd.DataFrame, stacks: StackTable | None = None,
                        process_names: dict[int, str] | None = None) -> bytes:
    if events.empty:
        return json.dumps({"traceEvents": [], "displayTimeUnit": "ms"}).encode()
    origin = int(events["ts_ns"].min())
    lanes: dict[tuple[str, int, int], int] = {}
    parts: list[str] = []
    out: list[dict[str, Any]] = []
    process_names = process_names or {}
    for kind, group in events.groupby("kind", observed=True, sort=False):
        if kind in ("span", "instant"):
            parts.extend(_spans(group, origin, lanes, instant=kind == "instant"))
        elif kind == "counter":
            out.extend(_counters(group, origin))
        elif kind == "sample" and stacks is not None:
            out.extend(_samples(group, origin, lanes, stacks))
    out.extend(_flows(events, origin, lanes))
    out.extend(_metadata(events, lanes, process_names))
    if out:
        parts.append(orjson.dumps(out)[1:-1].decode())  # one call for the small events
    other = json.dumps({"origin_epoch_ns": origin, "exporter": "prof"})
    return ('{"traceEvents":[' + ",".join(parts) + '],"displayTimeUnit":"ms","otherData":' + other + "}").encode()


def _lane(lanes: dict[tuple[str, int, int], int], source: str, pid: int, tid: int) -> int:
    key = (source, pid, tid)
    if key not in lanes:
        lanes[key] = len(lanes) + 1
    return lanes[key]


def _us(ns: np.ndarray | int, origin: int) -> Any:
    return (np.asarray(ns, dtype=np.int64) - origin) / 1000.0


def _spans(group: pd.DataFrame, origin: int, lanes: dict, instant: bool = False) -> list[str]:
    """Span rows as JSON text, built column-wise: the export's hot path (a million rows)."""
    sources = group["source"].astype(str).to_numpy()
    pids = group["pid"].to_numpy()
    tids = group["tid"].to_numpy()
    starts, durs = group["ts_ns"].to_numpy(), group["dur_ns"].to_numpy()
    lane_of_row = group.groupby(["source", "pid", "tid"], observed=True, sort=False).ngroup().to_numpy()
    sublane = _pack_sublanes(lane_of_row, starts, durs)
    codes, pairs = pd.factorize(lane_of_row * 1024 + np.minimum(sublane, 1023))
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    lane_ids = np.asarray([_lane(lanes, sources[i] if sublane[i] == 0 else f"{sources[i]} +{sublane[i]}",
                                 int(pids[i]), int(tids[i])) for i in first])[codes].tolist()
    names = _json_labels(group["name"])
    cats = _json_labels(group["source"])
    ts = ((starts - origin) / 1000.0).tolist()
    dur = (durs / 1000.0).tolist()
    args = _span_args(group)
    phase = '"ph":"i","s":"t"' if instant else '"ph":"X"'
    return [f'{{{phase},"name":{n},"cat":{c},"pid":{p},"tid":{lane},"ts":{t:.3f},"dur":{d:.3f},"args":{a}}}'
            for n, c, p, lane, t, d, a in zip(names, cats, pids.tolist(), lane_ids, ts, dur, args)]


def _json_labels(column: pd.Series) -> list[str]:
    """JSON string literal per row of a categorical, encoding each category once."""
    encoded = np.asarray([json.dumps(str(c)) for c in column.cat.categories] + ["null"], dtype=object)
    return encoded[column.cat.codes.to_numpy()].tolist()  # code -1 (missing) picks "null"


def _span_args(group: pd.DataFrame) -> list[str]:
    """The stored args JSON plus request and batch ids, spliced as text (no per-row parse)."""
    raw = group["args"].astype(object).where(group["args"].notna(), None).tolist()
    requests = _json_labels(group["request_id"])
    batches = group["batch_id"].tolist()
    out = []
    for text, request, batch in zip(raw, requests, batches):
        extra = ""
        if request != "null":
            extra = '"request_id":' + request
        if batch >= 0:
            extra = f'{extra},"batch_id":{batch}' if extra else f'"batch_id":{batch}'
        if text is None or text == "{}":
            out.append("{" + extra + "}")
        elif extra:
            out.append(text[:-1] + "," + extra + "}")
        else:
            out.append(text)
    return out


def _pack_sublanes(lane_of_row: np.ndarray, starts: np.ndarray, durs: np.ndarray) -> np.ndarray:
    """Sub-lane per span so that spans on one lane always nest: a span that overlaps an open
    one without fitting inside it (a CUDA sync across a memcpy, say) moves to the next
    sub-lane of the same thread. Lanes whose spans never overlap skip the walk."""
    result = np.zeros(len(starts), dtype=np.int64)
    ends = starts + durs
    for positions in pd.Series(np.arange(len(starts))).groupby(lane_of_row).indices.values():
        order = positions[np.lexsort((-ends[positions], starts[positions]))]
        if len(order) < 2 or (starts[order[1:]] >= ends[order[:-1]]).all():
            continue
        result[order] = _walk_sublanes(starts[order].tolist(), ends[order].tolist())
    return result


def _walk_sublanes(starts: list[int], ends: list[int]) -> list[int]:
    levels = [0] * len(starts)
    stacks: list[list[int]] = []  # per sub-lane: end times of the open spans
    for i, (start, end) in enumerate(zip(starts, ends)):
        for level, stack in enumerate(stacks):
            while stack and stack[-1] <= start:
                stack.pop()
            if not stack or end <= stack[-1]:
                stack.append(end)
                levels[i] = level
                break
        else:
            stacks.append([end])
            levels[i] = len(stacks) - 1
    return levels


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
    inference = inference.drop_duplicates("batch_id")[["batch_id", "ts_ns", "pid", "tid"]]
    joined = queue.merge(inference, on="batch_id", suffixes=("", "_batch"), how="inner")
    out = []
    columns = (joined["ts_ns"] + np.maximum(joined["dur_ns"] - 1, 0), joined["pid"], joined["tid"],
               joined["ts_ns_batch"], joined["pid_batch"], joined["tid_batch"])
    for flow_id, (start, pid, tid, end, bpid, btid) in enumerate(zip(*(c.tolist() for c in columns)), start=1):
        out.append({"ph": "s", "id": flow_id, "name": "batch", "cat": "flow", "pid": pid,
                    "tid": _lane(lanes, "stages", pid, tid), "ts": (start - origin) / 1000.0})
        out.append({"ph": "f", "bp": "e", "id": flow_id, "name": "batch", "cat": "flow", "pid": bpid,
                    "tid": _lane(lanes, "stages", bpid, btid), "ts": (end - origin) / 1000.0})
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
