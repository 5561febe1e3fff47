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

The typed reader (``probes.kineto_typed``) takes every trace that fits its shape, the generic
one here the rest; ``probes.kineto_format`` holds what both know of the format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from isal import igzip
from isal.igzip_lib import IsalError

from probes.kineto_format import (ARG_KEYS, DEVICE_CATEGORIES, HOST_CATEGORIES, MEMCPY, MEMCPY_STAGE, SOURCE,
                                  KinetoError, KinetoTrace, copy_memory, us_array_to_ns)
from probes.kineto_typed import NotTyped, decode_typed
from profiler.timeline import gpu_pid, make_events

__all__ = ["DEVICE_CATEGORIES", "HOST_CATEGORIES", "KinetoError", "KinetoTrace", "ingest_kineto",
           "read_trace_json"]


def ingest_kineto(path: Path | str) -> KinetoTrace:
    """The kept events of a kineto trace file. The typed decode (``probes.kineto_typed``) reads
    it where it fits; a trace that does not (string timestamps, odd args) goes through the
    generic JSON path instead, with the same result. So does an unreadable one, which raises
    KinetoError there."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KinetoError(f"{path}: not a readable kineto trace ({exc})") from None
    try:
        return decode_typed(raw)
    except NotTyped:
        return _ingest_generic(read_trace_json(path, raw))  # the bytes already read, not the file again


def read_trace_json(path: Path | str, raw: bytes | None = None) -> dict:
    """The kineto document of the file at ``path`` (whose bytes are ``raw`` where given)."""
    path = Path(path)
    try:
        _, document = _parsed(path.read_bytes() if raw is None else raw)
    except (OSError, EOFError, ValueError) as exc:
        raise KinetoError(f"{path}: not a readable kineto trace ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("traceEvents"), list):
        raise KinetoError(f"{path}: no traceEvents array: not a kineto/Chrome trace")
    return document


def _parsed(raw: bytes) -> tuple[bytes, object]:
    """(the JSON text, its value) of a file's bytes, gunzipped if they are gzip."""
    text = decompressed(raw)
    return text, parse_json(text)


def decompressed(raw: bytes) -> bytes:
    """A file's bytes, gunzipped if they are gzip (ValueError if the stream is corrupt)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            return igzip.decompress(raw)
        except IsalError as exc:  # a corrupt stream
            raise ValueError(f"corrupt gzip data ({exc})") from None
    return raw


def parse_json(text: bytes) -> object:
    """The value of a JSON text (ValueError if it is not JSON)."""
    return orjson.loads(text)


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
    ts_ns = base_ns + us_array_to_ns([e.get("ts", 0) for e in rows])
    dur_ns = np.maximum(us_array_to_ns([e.get("dur", 0) for e in rows]), 0)
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
        kept.update((k, a[k]) for k in ARG_KEYS if k in a)
        if cat == "gpu_memcpy":
            match = MEMCPY.match(names[i])
            if match:
                direction, src, dst = match.groups()
                kept["copy"] = direction
                kept["memory"] = copy_memory(src, dst)
                stages[i] = MEMCPY_STAGE.get(direction, "inference")
        elif cat in ("kernel", "gpu_memset"):
            stages[i] = "inference"
        args.append(orjson.dumps(kept).decode())
    return make_events(ts_ns=ts_ns, source=SOURCE, kind="span", name=names, dur_ns=dur_ns, pid=pid, tid=tid,
                       stage=stages, args=args)


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default
