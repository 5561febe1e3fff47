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
import pyarrow as pa
import pyarrow.compute as pc

from profiler.timeline import StackTable

_GPU_BASE = -100


def render_chrome_trace(events: pd.DataFrame, stacks: StackTable | None = None,
                        process_names: dict[int, str] | None = None) -> bytes:
    if events.empty:
        return json.dumps({"traceEvents": [], "displayTimeUnit": "ms"}).encode()
    origin = int(events["ts_ns"].min())
    lanes: dict[tuple[str, int, int], int] = {}
    parts: list[bytes] = []
    out: list[dict[str, Any]] = []
    process_names = process_names or {}
    kinds = events["kind"].unique()
    groups = [(kinds[0], events)] if len(kinds) == 1 else events.groupby("kind", observed=True, sort=False)
    for kind, group in groups:  # (one kind: no copy of a million rows into a group)
        if kind in ("span", "instant"):
            parts.append(_spans(group, origin, lanes, instant=kind == "instant"))
        elif kind == "counter":
            out.extend(_counters(group, origin))
        elif kind == "sample" and stacks is not None:
            out.extend(_samples(group, origin, lanes, stacks))
    out.extend(_flows(events, origin, lanes))
    out.extend(_launch_flows(events, origin, lanes, first_id=len(out) + 1))
    out.extend(_metadata(events, lanes, process_names))
    if out:
        parts.append(orjson.dumps(out)[1:-1])  # one call for the small events
    other = orjson.dumps({"origin_epoch_ns": origin, "exporter": "prof"})
    return b'{"traceEvents":[' + b",".join(p for p in parts if p) + b'],"displayTimeUnit":"ms","otherData":' + other + b"}"


def _lane(lanes: dict[tuple[str, int, int], int], source: str, pid: int, tid: int) -> int:
    key = (source, pid, tid)
    if key not in lanes:
        lanes[key] = len(lanes) + 1
    return lanes[key]


def _us(ns: np.ndarray | int, origin: int) -> Any:
    return (np.asarray(ns, dtype=np.int64) - origin) / 1000.0


def _spans(group: pd.DataFrame, origin: int, lanes: dict, instant: bool = False) -> bytes:
    """Span rows as JSON text, assembled column-wise by Arrow string kernels: the export's hot
    path (a million rows)."""
    sources = group["source"].astype(str).to_numpy()
    pids = group["pid"].to_numpy()
    tids = group["tid"].to_numpy()
    starts, durs = group["ts_ns"].to_numpy(), group["dur_ns"].to_numpy()
    lane_of_row = group.groupby(["source", "pid", "tid"], observed=True, sort=False).ngroup().to_numpy()
    sublane = _pack_sublanes(lane_of_row, starts, durs)
    codes, _ = pd.factorize(lane_of_row * 1024 + np.minimum(sublane, 1023))
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    lane_ids = np.asarray([_lane(lanes, sources[i] if sublane[i] == 0 else f"{sources[i]} +{sublane[i]}",
                                 int(pids[i]), int(tids[i])) for i in first], dtype=np.int64)[codes]
    head = '{"ph":"i","s":"t","name":' if instant else '{"ph":"X","name":'
    text = pc.binary_join_element_wise(
        head, pc.fill_null(_json_labels(group["name"]), '""'), ',"cat":', pc.fill_null(_json_labels(group["source"]), '""'),
        ',"pid":', _str(pids),
        ',"tid":', _str(lane_ids), ',"ts":', _str((starts - origin) / 1000.0), ',"dur":', _str(durs / 1000.0),
        ',"args":', _span_args(group), "},", "")
    # Every row ends with a comma; the rows sit back to back in the array's data buffer.
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = text.cast(pa.large_string())
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64, count=len(text) + 1, offset=text.offset * 8)
    return text.buffers()[2].to_pybytes()[offsets[0]:offsets[-1] - 1]


def _str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _json_labels(column: pd.Series) -> pa.Array:
    """JSON string literal per row of a categorical, encoding each category once."""
    categories = column.cat.categories.astype(str)
    if categories.str.contains(r'["\\\x00-\x1f]', regex=True).any():
        encoded = pa.array([json.dumps(c) for c in categories], type=pa.string())
    else:  # nothing to escape: quoting is enough, and much faster for 100k request ids
        encoded = pc.binary_join_element_wise('"', pa.array(categories, type=pa.string()), '"', "")
    codes = pa.array(column.cat.codes.to_numpy(), mask=column.cat.codes.to_numpy() < 0)
    return pc.take(encoded, codes)  # missing (code -1) stays null


def _span_args(group: pd.DataFrame) -> pa.Array:
    """The stored args JSON plus request and batch ids, spliced as text (no per-row parse)."""
    base = pa.array(group["args"].array, type=pa.string(), from_pandas=True)
    request = pc.binary_join_element_wise('"request_id":', _json_labels(group["request_id"]), "")
    batch_ids = group["batch_id"].to_numpy()
    batch = pc.binary_join_element_wise('"batch_id":', pa.array(batch_ids, mask=batch_ids < 0).cast(pa.string()), "")
    # (null_handling="skip" returned an empty array when every input was null: join by hand)
    request, batch = pc.fill_null(request, ""), pc.fill_null(batch, "")
    both = pc.and_(pc.not_equal(request, ""), pc.not_equal(batch, ""))
    extra = pc.binary_join_element_wise(request, pc.if_else(both, ",", ""), batch, "")
    empty_base = pc.or_kleene(pc.is_null(base), pc.equal(base, "{}"))
    spliced = pc.binary_join_element_wise(pc.utf8_slice_codeunits(base, 0, -1), ",", extra, "}", "")
    wrapped = pc.binary_join_element_wise("{", extra, "}", "")
    no_extra = pc.equal(extra, "")
    return pc.if_else(pc.fill_null(empty_base, True), wrapped, pc.if_else(no_extra, base, spliced))


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


_LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
_DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def _launch_flows(events: pd.DataFrame, origin: int, lanes: dict, first_id: int) -> list[dict]:
    """CUDA launch (runtime/driver call) -> the kernel, copy or memset it queued, joined by the
    kineto ``correlation`` id (kineto's own ac2g flows say the same)."""
    torch = events[(events["source"] == "torch") & (events["kind"] == "span") & events["args"].notna()]
    if torch.empty:
        return []
    fields = torch["args"].str.extract(r'"correlation":(\d+)').astype("float64")[0]
    cats = torch["args"].str.extract(r'"cat":"(\w+)"')[0]
    frame = pd.DataFrame({"ts": torch["ts_ns"].to_numpy(), "pid": torch["pid"].to_numpy(),
                          "tid": torch["tid"].to_numpy(), "corr": fields.to_numpy(), "cat": cats.to_numpy()})
    frame = frame.dropna(subset=["corr"])
    launches = frame[frame["cat"].isin(_LAUNCH_CATS)].drop_duplicates("corr")
    targets = frame[frame["cat"].isin(_DEVICE_CATS)]
    joined = launches.merge(targets, on="corr", suffixes=("", "_dev"))
    out = []
    for n, (ts, pid, tid, ts_dev, pid_dev, tid_dev) in enumerate(zip(
            *(joined[c].tolist() for c in ("ts", "pid", "tid", "ts_dev", "pid_dev", "tid_dev"))), start=first_id):
        out.append({"ph": "s", "id": n, "name": "launch", "cat": "flow", "pid": pid,
                    "tid": _lane(lanes, "torch", pid, tid), "ts": (ts - origin) / 1000.0})
        out.append({"ph": "f", "bp": "e", "id": n, "name": "launch", "cat": "flow", "pid": pid_dev,
                    "tid": _lane(lanes, "torch", pid_dev, tid_dev), "ts": (ts_dev - origin) / 1000.0})
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
