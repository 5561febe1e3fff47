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
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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


def read_trace_json(path: Path | str) -> dict:
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        document = _loads(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise KinetoError(f"{path}: not a readable kineto trace ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("traceEvents"), list):
        raise KinetoError(f"{path}: no traceEvents array: not a kineto/Chrome trace")
    return document


def _loads(raw: bytes) -> object:
    try:
        import orjson

        return orjson.loads(raw)
    except ImportError:  # orjson is a dependency, but the stdlib parser gives the same result
        return json.loads(raw)


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
    n = len(rows)
    ts_ns = np.empty(n, dtype=np.int64)
    dur_ns = np.empty(n, dtype=np.int64)
    pid = np.empty(n, dtype=np.int64)
    tid = np.empty(n, dtype=np.int64)
    names, kinds_cat, stages, args = [], [], [], []
    for i, event in enumerate(rows):
        cat = event["cat"]
        ts_ns[i] = base_ns + _us_to_ns(event.get("ts", 0))
        dur_ns[i] = max(0, _us_to_ns(event.get("dur", 0)))
        name = str(event.get("name", ""))
        raw_args = event.get("args") or {}
        if cat in DEVICE_CATEGORIES:
            device = raw_args.get("device", event.get("pid"))
            pid[i] = gpu_pid(device if isinstance(device, int) else 0)
            lane = raw_args.get("stream", event.get("tid"))
            tid[i] = lane if isinstance(lane, int) else -1
        else:
            pid[i] = event["pid"] if isinstance(event.get("pid"), int) else -1
            tid[i] = event["tid"] if isinstance(event.get("tid"), int) else -1
        kept = {k: raw_args[k] for k in _ARG_KEYS if k in raw_args}
        kept["cat"] = cat
        stage = None
        if cat == "gpu_memcpy":
            match = _MEMCPY.match(name)
            if match:
                direction, src, dst = match.groups()
                kept["copy"] = direction
                kept["memory"] = "pinned" if "Pinned" in (src, dst) else "pageable" if "Pageable" in (src, dst) \
                    else "device"
                stage = _MEMCPY_STAGE.get(direction, "inference")
        elif cat in ("kernel", "gpu_memset"):
            stage = "inference"
        names.append(name)
        kinds_cat.append(cat)
        stages.append(stage)
        args.append(json.dumps(kept, separators=(",", ":")))
    return make_events(ts_ns=ts_ns, source=SOURCE, kind="span", name=names, dur_ns=dur_ns, pid=pid, tid=tid,
                       stage=stages, args=args)


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
