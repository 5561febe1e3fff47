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

import numpy as np
import orjson
import pandas as pd

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


def load_json_file(path: Path | str) -> tuple[bytes, object]:
    """(decompressed bytes, parsed JSON) of a plain or gzipped JSON file.
    Raises OSError, EOFError or ValueError as reading, gunzip or parsing fail."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw, orjson.loads(raw)


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
    document = read_trace_json(path)
    base = int(document.get("baseTimeNanoseconds") or 0)
    process_names: dict[int, str] = {}
    thread_names: dict[tuple[int, int], str] = {}
    rows = []
    for event in document["traceEvents"]:
        phase = event.get("ph")
        if phase == "X":
            cat = event.get("cat")
            if cat in HOST_CATEGORIES or cat in DEVICE_CATEGORIES:
                rows.append(event)
        elif phase == "M" and isinstance(event.get("pid"), int):
            _metadata(event, process_names, thread_names)
    events = _to_frame(rows, base)
    return KinetoTrace(events, list(document.get("deviceProperties") or []), process_names, thread_names, base)


def _metadata(event: dict, processes: dict[int, str], threads: dict[tuple[int, int], str]) -> None:
    name = (event.get("args") or {}).get("name")
    if not isinstance(name, str):
        return
    if event.get("name") == "process_name":
        processes[event["pid"]] = name
    elif event.get("name") == "thread_name" and isinstance(event.get("tid"), int):
        threads[(event["pid"], event["tid"])] = name


def _to_frame(rows: list[dict], base_ns: int) -> pd.DataFrame:
    """Columns built field by field (comprehensions, then numpy): the hot loop of ingest."""
    cats = [e["cat"] for e in rows]
    raw_args = [e.get("args") or {} for e in rows]
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
        kept = {k: a[k] for k in _ARG_KEYS if k in a}
        kept["cat"] = cat
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
