"""PyTorch profiler (kineto) Chrome-trace JSON → timeline events.

Kineto writes ``{"traceEvents": [...], "deviceProperties": [...], "baseTimeNanoseconds": N}``
(plain or gzipped). ``ts``/``dur`` are µs, often fractional; absolute time is
``baseTimeNanoseconds + ts`` where the base is present, else ``ts`` itself is µs since the
epoch (older kineto). Host events carry the OS pid/tid; device events carry the GPU index as
pid and the CUDA stream as tid, which we map to ``pid = gpu_pid(device)`` so GPU lanes never
collide with an OS process.

Categories kept: cpu_op, user_annotation, gpu_user_annotation, python_function, kernel,
gpu_memcpy, gpu_memset, cuda_runtime, cuda_driver, cuda_sync. ``ac2g`` flow events are not
copied: a kernel's ``correlation`` arg already names the runtime call that launched it.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from profiler.timeline import gpu_pid, make_events

SOURCE = "torch"
HOST_CATEGORIES = frozenset({"cpu_op", "user_annotation", "python_function", "cuda_runtime", "cuda_driver"})
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "cuda_sync", "gpu_user_annotation"})
_MEMCPY = re.compile(r"Memcpy (\w+) \((\w+) -> (\w+)\)")
_MEMCPY_STAGE = {"HtoD": "h2d", "DtoH": "d2h"}
_ARG_KEYS = ("correlation", "stream", "device", "bytes", "External id", "Input Dims", "cuda_sync_kind",
             "grid", "block", "registers per thread", "shared memory", "est. achieved occupancy %")


class KinetoError(ValueError):
    pass


@dataclass
class KinetoTrace:
    events: pd.DataFrame
    device_properties: list[dict] = field(default_factory=list)
    process_names: dict[int, str] = field(default_factory=dict)
    thread_names: dict[tuple[int, int], str] = field(default_factory=dict)
    base_time_ns: int = 0
    parser: str = "typed"  # or "generic" when the trace did not fit the typed shape


def load_json_file(path: Path | str) -> tuple[bytes, object]:
    """(decompressed bytes, parsed JSON) of a plain or gzipped JSON file.
    Raises OSError, EOFError or ValueError as reading, gunzip or parsing fail."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw, orjson.loads(raw)


_NO_RAW = msgspec.Raw(b"")  # absent; omitted when encoding


class _Args(msgspec.Struct, omit_defaults=True, gc=False):
    """The kineto ``args`` we keep (others are skipped while parsing, never materialised).
    ``cat`` (and ``copy``/``memory`` for copies) are ours, set before re-encoding."""
    cat: str | None = None
    copy: str | None = None
    memory: str | None = None
    correlation: int | None = None
    stream: int | None = None
    device: int | None = None
    bytes: int | None = None
    external_id: int | None = msgspec.field(default=None, name="External id")
    input_dims: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Input Dims")
    cuda_sync_kind: str | None = None
    grid: msgspec.Raw = _NO_RAW
    block: msgspec.Raw = _NO_RAW
    registers: int | None = msgspec.field(default=None, name="registers per thread")
    shared_memory: int | None = msgspec.field(default=None, name="shared memory")
    occupancy: float | None = msgspec.field(default=None, name="est. achieved occupancy %")
    name: str | None = None  # process_name / thread_name metadata


class _Event(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str | None = None
    tid: int | str | None = None
    ts: float = 0.0
    dur: float = 0.0
    args: _Args | None = None


class _Document(msgspec.Struct, gc=False):
    traceEvents: list[_Event]
    deviceProperties: list[dict] | None = None
    baseTimeNanoseconds: int | None = None


_DECODER = msgspec.json.Decoder(_Document)
_ENCODE = msgspec.json.Encoder().encode


def read_trace_json(path: Path | str) -> dict:
    path = Path(path)
    try:
        _, document = load_json_file(path)
    except (OSError, EOFError, ValueError) as exc:
        raise KinetoError(f"{path}: not a readable kineto trace ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("traceEvents"), list):
        raise KinetoError(f"{path}: no traceEvents array: not a kineto/Chrome trace")
    return document


def ingest_kineto(path: Path | str) -> KinetoTrace:
    """Typed decode straight into the few fields we keep (msgspec skips the rest without
    building Python objects); a trace that does not fit that shape (string timestamps, odd
    args) goes through the generic JSON path instead, with the same result."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise KinetoError(f"{path}: not a readable kineto trace ({exc})") from None
    try:
        document = _DECODER.decode(raw)
    except msgspec.DecodeError:
        return _ingest_generic(read_trace_json(path))
    del raw
    base = int(document.baseTimeNanoseconds or 0)
    process_names: dict[int, str] = {}
    thread_names: dict[tuple[int, int], str] = {}
    keep = HOST_CATEGORIES | DEVICE_CATEGORIES
    rows = [e for e in document.traceEvents if e.ph == "X" and e.cat in keep]
    for event in [e for e in document.traceEvents if e.ph == "M"]:
        if isinstance(event.pid, int) and event.args is not None and event.args.name:
            if event.name == "process_name":
                process_names[event.pid] = event.args.name
            elif event.name == "thread_name" and isinstance(event.tid, int):
                thread_names[(event.pid, event.tid)] = event.args.name
    events = _typed_frame(rows, base)
    return KinetoTrace(events, list(document.deviceProperties or []), process_names, thread_names, base)


def _typed_frame(rows: list[_Event], base_ns: int) -> pd.DataFrame:
    """Columns by list comprehension over the decoded structs, then numpy; args re-encoded
    by msgspec (compact, only the kept keys) behind a per-category head."""
    n = len(rows)
    cats = [e.cat for e in rows]
    names = [e.name for e in rows]
    raw_args = [e.args or _Args() for e in rows]
    device = np.fromiter((c in DEVICE_CATEGORIES for c in cats), dtype=bool, count=n)
    ts_ns = base_ns + _us_array_to_ns([e.ts for e in rows])
    dur_ns = np.maximum(_us_array_to_ns([e.dur for e in rows]), 0)
    host_pid = _int_column([e.pid for e in rows], -1)
    host_tid = _int_column([e.tid for e in rows], -1)
    dev_id = np.where(device, _int_column([a.device for a in raw_args], -1), -1)
    dev_id = np.where(dev_id >= 0, dev_id, np.maximum(host_pid, 0))
    stream = _int_column([a.stream for a in raw_args], -2)
    pid = np.where(device, gpu_pid(dev_id), host_pid)
    tid = np.where(device, np.where(stream != -2, stream, host_tid), host_tid)
    stages: list[str | None] = [_CAT_STAGE.get(c) for c in cats]
    for a, c in zip(raw_args, cats):
        a.cat = c
    for i in np.flatnonzero(np.asarray(cats, dtype=object) == "gpu_memcpy"):
        match = _MEMCPY.match(names[i])
        if match:
            direction, src, dst = match.groups()
            raw_args[i].copy = direction
            raw_args[i].memory = "pinned" if "Pinned" in (src, dst) else "pageable" if "Pageable" in (src, dst) \
                else "device"
            stages[i] = _MEMCPY_STAGE.get(direction, "inference")
    args = pa.array(list(map(_ENCODE, raw_args)), pa.binary()).cast(pa.string())
    return make_events(ts_ns=ts_ns, source=SOURCE, kind="span", name=names, dur_ns=dur_ns, pid=pid, tid=tid,
                       stage=stages, args=args)


_CAT_STAGE = {"kernel": "inference", "gpu_memset": "inference"}


def _int_column(values: list, default: int) -> np.ndarray:
    """int64 array of ``values``; anything not an int (None, a string pid such as "Spans") → default."""
    try:
        return np.array(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return np.array([v if type(v) is int else default for v in values], dtype=np.int64)


def _ingest_generic(document: dict) -> KinetoTrace:
    base = int(document.get("baseTimeNanoseconds") or 0)
    process_names: dict[int, str] = {}
    thread_names: dict[tuple[int, int], str] = {}
    rows = []
    for event in document["traceEvents"]:
        if not isinstance(event, dict):
            continue
        phase = event.get("ph")
        if phase == "X":
            cat = event.get("cat")
            if cat in HOST_CATEGORIES or cat in DEVICE_CATEGORIES:
                rows.append(event)
        elif phase == "M" and isinstance(event.get("pid"), int):
            _metadata(event, process_names, thread_names)
    events = _to_frame(rows, base)
    return KinetoTrace(events, list(document.get("deviceProperties") or []), process_names, thread_names, base,
                       "generic")


def _metadata(event: dict, processes: dict[int, str], threads: dict[tuple[int, int], str]) -> None:
    name = (event.get("args") or {}).get("name")
    if not isinstance(name, str):
        return
    if event.get("name") == "process_name":
        processes[event["pid"]] = name
    elif event.get("name") == "thread_name" and isinstance(event.get("tid"), int):
        threads[(event["pid"], event["tid"])] = name


def _to_frame(rows: list[dict], base_ns: int) -> pd.DataFrame:
    """The generic path: columns built field by field from plain dicts."""
    cats = [str(e["cat"]) for e in rows]
    raw_args = [e.get("args") if isinstance(e.get("args"), dict) else {} for e in rows]
    names = [str(e.get("name", "")) for e in rows]
    device = np.fromiter((c in DEVICE_CATEGORIES for c in cats), dtype=bool, count=len(rows))
    ts_ns = base_ns + _us_array_to_ns([e.get("ts", 0) for e in rows])
    dur_ns = np.maximum(_us_array_to_ns([e.get("dur", 0) for e in rows]), 0)
    host_pid = np.fromiter((e.get("pid") if isinstance(e.get("pid"), int) else -1 for e in rows), np.int64, len(rows))
    host_tid = np.fromiter((e.get("tid") if isinstance(e.get("tid"), int) else -1 for e in rows), np.int64, len(rows))
    dev_id = np.fromiter((_int(a.get("device", e.get("pid")), 0) for a, e in zip(raw_args, rows)), np.int64, len(rows))
    stream = np.fromiter((_int(a.get("stream", e.get("tid")), -1) for a, e in zip(raw_args, rows)), np.int64,
                         len(rows))
    pid = np.where(device, gpu_pid(dev_id), host_pid)
    tid = np.where(device, stream, host_tid)
    stages: list[str | None] = [None] * len(rows)
    args = []
    for i, (cat, a) in enumerate(zip(cats, raw_args)):
        kept = {"cat": cat}
        kept.update((k, a[k]) for k in _ARG_KEYS if k in a)
        if cat == "gpu_memcpy":
            match = _MEMCPY.match(names[i])
            if match:
                direction, src, dst = match.groups()
                kept["copy"] = direction
                kept["memory"] = "pinned" if "Pinned" in (src, dst) else "pageable" if "Pageable" in (src, dst) \
                    else "device"
                stages[i] = _MEMCPY_STAGE.get(direction, "inference")
        elif cat in ("kernel", "gpu_memset"):
            stages[i] = "inference"
        args.append(_dumps(kept))
    return make_events(ts_ns=ts_ns, source=SOURCE, kind="span", name=names, dur_ns=dur_ns, pid=pid, tid=tid,
                       stage=stages, args=args)


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _us_array_to_ns(values: list) -> np.ndarray:
    """µs (ints or floats) to integer ns. Whole µs convert exactly; the fraction is rounded to
    the ns (float64 holds epoch-µs values to about 0.25 µs, which bounds what survives)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray([_us_to_ns(v) for v in values], dtype=np.int64)
    whole = np.floor(array)
    return whole.astype(np.int64) * 1000 + np.round((array - whole) * 1000).astype(np.int64)


def _dumps(value: dict) -> str:
    return orjson.dumps(value).decode()


def _us_to_ns(value: object) -> int:
    """µs (int, float or numeric string) to integer ns without float rounding on big values."""
    if isinstance(value, int):
        return value * 1000
    if isinstance(value, float):
        whole = int(value)
        return whole * 1000 + round((value - whole) * 1000)
    text = str(value)
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + (int((frac + "000")[:3]) if frac else 0)
