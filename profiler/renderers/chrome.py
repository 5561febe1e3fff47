"""Chrome Trace Event JSON (for Perfetto and chrome://tracing).

Each (source, pid, tid) lane becomes its own named thread, so spans of different sources on
one OS thread (a stage span and the ORT nodes inside it, say) never break each other's
nesting. Timestamps are rebased to the first event so float µs keep sub-µs precision.
Spans are ``X`` events, counters ``C`` events, sampled stacks nested ``X`` events (one per
frame, merged while the frame stays on the stack), and each request's ``queue`` span is
joined to the inference of its batch by a flow arrow.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Callable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiler.timeline import StackTable

_GPU_BASE = -100


def render_chrome_trace(events: pd.DataFrame, stacks: StackTable | None = None,
                        process_names: dict[int, str] | None = None) -> bytes:
    """The whole trace as bytes (tests, small sessions); see :func:`write_chrome_trace`."""
    buffer = io.BytesIO()
    write_chrome_trace(events, buffer, stacks, process_names)
    return buffer.getvalue()


def write_chrome_trace(events: pd.DataFrame, out: BinaryIO, stacks: StackTable | None = None,
                       process_names: dict[int, str] | None = None) -> None:
    """Stream the trace into ``out``: the span rows go straight from Arrow's buffer to the
    file, so a million-row export never holds a second copy of its text."""
    if events.empty:
        out.write(json.dumps({"traceEvents": [], "displayTimeUnit": "ms"}).encode())
        return
    origin = int(events["ts_ns"].min())
    lanes: dict[tuple[str, int, int], int] = {}
    small: list[dict[str, Any]] = []
    process_names = process_names or {}
    out.write(b'{"traceEvents":[')
    written = False
    kinds = events["kind"].unique()
    groups = [(kinds[0], events)] if len(kinds) == 1 else events.groupby("kind", observed=True, sort=False)
    for kind, group in groups:  # (one kind: no copy of a million rows into a group)
        if kind in ("span", "instant"):
            written = _write_chunked(out, len(group), _spans(group, origin, lanes, instant=kind == "instant"),
                                     written)
        elif kind == "counter":
            small.extend(_counters(group, origin))
        elif kind == "sample" and stacks is not None:
            small.extend(_samples(group, origin, lanes, stacks))
    flows, n_flows = _flows(events, origin, lanes)
    written = _write_rows(out, flows, written)
    small.extend(_launch_flows(events, origin, lanes, first_id=n_flows + 1))
    small.extend(_metadata(events, lanes, process_names))
    if small:
        out.write(b"," if written else b"")
        out.write(orjson.dumps(small)[1:-1])  # one call for the small events
    other = orjson.dumps({"origin_epoch_ns": origin, "exporter": "prof"})
    out.write(b'],"displayTimeUnit":"ms","otherData":' + other + b"}")


_CHUNK_ROWS = 1 << 17


def _write_chunked(out: BinaryIO, n: int, render: Callable[[int, int], pa.Array], written: bool) -> bool:
    """Render rows [0, n) in chunks on two threads, writing each chunk in order as it is ready."""
    chunks = [(lo, min(lo + _CHUNK_ROWS, n)) for lo in range(0, n, _CHUNK_ROWS)]
    if len(chunks) <= 1:
        return _write_rows(out, render(0, n), written)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(render, lo, hi) for lo, hi in chunks[:2]]
        for index in range(len(chunks)):
            text = pending[index].result()
            if index + 2 < len(chunks):  # at most two chunks ahead of the writer
                pending.append(pool.submit(render, *chunks[index + 2]))
            written = _write_rows(out, text, written)
            pending[index] = None  # type: ignore[call-overload]  # free the chunk once written
    return written


def _write_rows(out: BinaryIO, text: pa.Array | None, written: bool) -> bool:
    """Write rows that each end with a comma, back to back in the array's data buffer, from
    the buffer itself (no copy); the last row's comma is dropped. Returns whether anything
    has been written so far."""
    if text is None or len(text) == 0:
        return written
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width, count=len(text) + 1,
                            offset=text.offset * np.dtype(width).itemsize)
    if written:
        out.write(b",")
    out.write(memoryview(text.buffers()[2])[int(offsets[0]):int(offsets[-1]) - 1])
    return True


def _lane(lanes: dict[tuple[str, int, int], int], source: str, pid: int, tid: int) -> int:
    key = (source, pid, tid)
    if key not in lanes:
        lanes[key] = len(lanes) + 1
    return lanes[key]


def _us(ns: np.ndarray | int, origin: int) -> Any:
    return (np.asarray(ns, dtype=np.int64) - origin) / 1000.0


def _spans(group: pd.DataFrame, origin: int, lanes: dict, instant: bool = False) -> Callable[[int, int], pa.Array]:
    """Span rows as JSON text, assembled column-wise by Arrow string kernels: the export's hot
    path (a million rows). Lanes are decided here for all rows; the text of rows [lo, hi) is
    made by the returned function, so chunks can be made on two threads (Arrow kernels run
    without the GIL) and written as they come."""
    source_codes = group["source"].cat.codes.to_numpy()
    source_names = group["source"].cat.categories.astype(str)
    pids = group["pid"].to_numpy()
    tids = group["tid"].to_numpy()
    starts, durs = group["ts_ns"].to_numpy(), group["dur_ns"].to_numpy()
    lane_of_row = group.groupby(["source", "pid", "tid"], observed=True, sort=False).ngroup().to_numpy()
    sublane = _pack_sublanes(lane_of_row, starts, durs)
    codes, _ = pd.factorize(lane_of_row * 1024 + np.minimum(sublane, 1023))
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    lane_ids = np.asarray([_lane(lanes, _sublane_name(source_names[source_codes[i]], sublane[i]),
                                 int(pids[i]), int(tids[i])) for i in first], dtype=np.int64)[codes]
    head = '{"ph":"i","s":"t","name":' if instant else '{"ph":"X","name":'
    names = pc.fill_null(_json_labels(group["name"]), '""')
    cats = pc.fill_null(_json_labels(group["source"]), '""')
    base_args = pa.array(group["args"].array, type=pa.string(), from_pandas=True)
    requests = _json_labels(group["request_id"])
    batch_ids = group["batch_id"].to_numpy()
    ts_us, dur_us = (starts - origin) / 1000.0, durs / 1000.0

    def render(lo: int, hi: int) -> pa.Array:
        return pc.binary_join_element_wise(
            head, names.slice(lo, hi - lo), ',"cat":', cats.slice(lo, hi - lo), ',"pid":', _str(pids[lo:hi]),
            ',"tid":', _str(lane_ids[lo:hi]), ',"ts":', _str(ts_us[lo:hi]), ',"dur":', _str(dur_us[lo:hi]),
            ',"args":', _span_args(base_args.slice(lo, hi - lo), requests.slice(lo, hi - lo), batch_ids[lo:hi]),
            "},", "")

    return render


def _sublane_name(source: str, sublane: int) -> str:
    return source if sublane == 0 else f"{source} +{sublane}"


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


def _span_args(base: pa.Array, requests: pa.Array, batch_ids: np.ndarray) -> pa.Array:
    """The stored args JSON plus request and batch ids, spliced as text (no per-row parse)."""
    request = pc.binary_join_element_wise('"request_id":', requests, "")
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


def _batch_flow_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Each request's queue span joined to its batch's inference span."""
    spans = events[(events["source"] == "stages") & (events["kind"] == "span") & (events["batch_id"] >= 0)]
    queue = spans[spans["stage"] == "queue"][["batch_id", "ts_ns", "dur_ns", "pid", "tid"]]
    inference = spans[(spans["stage"] == "inference") & spans["request_id"].isna()]
    inference = inference.drop_duplicates("batch_id")[["batch_id", "ts_ns", "pid", "tid"]]
    return queue.merge(inference, on="batch_id", suffixes=("", "_batch"), how="inner")


def _flows(events: pd.DataFrame, origin: int, lanes: dict) -> tuple[pa.Array | None, int]:
    """request queue span -> its batch's inference span, as JSON text rows (Arrow kernels:
    one flow pair per request, so as many rows as requests); and how many flows."""
    joined = _batch_flow_frame(events)
    if joined.empty:
        return None, 0
    ids = np.arange(1, len(joined) + 1)
    start = joined["ts_ns"].to_numpy() + np.maximum(joined["dur_ns"].to_numpy() - 1, 0)
    pid, tid = joined["pid"].to_numpy(), joined["tid"].to_numpy()
    bpid, btid = joined["pid_batch"].to_numpy(), joined["tid_batch"].to_numpy()
    lane = _lane_column(lanes, "stages", pid, tid)
    blane = _lane_column(lanes, "stages", bpid, btid)
    text = pc.binary_join_element_wise(
        '{"ph":"s","id":', _str(ids), ',"name":"batch","cat":"flow","pid":', _str(pid), ',"tid":', _str(lane),
        ',"ts":', _str((start - origin) / 1000.0), '},{"ph":"f","bp":"e","id":', _str(ids),
        ',"name":"batch","cat":"flow","pid":', _str(bpid), ',"tid":', _str(blane),
        ',"ts":', _str((joined["ts_ns_batch"].to_numpy() - origin) / 1000.0), "},", "")
    return text, len(joined)


def _lane_column(lanes: dict, source: str, pids: np.ndarray, tids: np.ndarray) -> np.ndarray:
    pairs, codes = np.unique(np.stack([pids, tids], axis=1), axis=0, return_inverse=True)
    ids = np.asarray([_lane(lanes, source, int(p), int(t)) for p, t in pairs], dtype=np.int64)
    return ids[codes.reshape(-1)]


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


def process_names(meta: dict) -> dict[int, str]:
    """Names for the profiled processes' lanes, from the session's metadata."""
    names = {}
    server = meta.get("server") or {}
    if server.get("pid"):
        names[int(server["pid"])] = "sample server"
    target = meta.get("target") or {}
    if target.get("pid") and target.get("name"):
        names[int(target["pid"])] = str(target["name"])
    return names
