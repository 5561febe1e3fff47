"""ONNX Runtime profiling: switch it on at session creation, read its JSON back.

ORT writes a bare JSON array of Chrome ``X`` events (cats ``Session``, ``Node`` and, on some
providers, ``Kernel``) whose ``ts`` is µs since profiling started; the absolute start is only
known from ``InferenceSession.get_profiling_start_time_ns()``, so the probe writes it beside
the profile in ``<profile>.anchor.json``. A profile cut off by a crash, or by ORT's cap of one
million events, is read up to its last whole event, with a warning.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from profiler.timeline import make_events

SOURCE = "ort"
ANCHOR_SUFFIX = ".anchor.json"
EVENT_CAP = 1_000_000
_NODE_SUFFIXES = ("_kernel_time", "_fence_before", "_fence_after")


class OrtProfileError(ValueError):
    pass


def enable_profiling(options: Any, out_dir: Path | str) -> None:
    """Turn profiling on in ``onnxruntime.SessionOptions`` (it cannot be switched on later)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options.enable_profiling = True
    options.profile_file_prefix = str(out_dir / f"ort-{os.getpid()}")


def write_anchor(session: Any, profile_path: Path) -> Path:
    """Record the session's profiling start (epoch ns) beside its profile file."""
    anchor = profile_path.with_name(profile_path.name + ANCHOR_SUFFIX)
    anchor.write_text(json.dumps({"start_ns": int(session.get_profiling_start_time_ns()), "pid": os.getpid()}))
    return anchor


def end_profiling(session: Any) -> Path:
    """Stop profiling, write the anchor, and return the profile's path."""
    path = Path(session.end_profiling())
    write_anchor(session, path)
    return path


@dataclass
class OrtProfile:
    events: pd.DataFrame
    start_ns: int | None
    warnings: list[str] = field(default_factory=list)


def read_events(path: Path) -> tuple[list[dict], list[str]]:
    """The whole events of an ORT profile, tolerating a truncated tail.

    ORT writes one event per line, so lines are parsed one at a time (a cut-off last line is
    simply dropped); a file laid out otherwise is parsed as a whole document.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise OrtProfileError(f"{path}: cannot read ({exc.strerror})") from None
    events, warnings = _read_by_lines(path, text)
    if events is None:
        events, warnings = _read_document(path, text)
    if len(events) >= EVENT_CAP:
        warnings.append(f"{path.name}: {len(events)} events: ORT stops recording at {EVENT_CAP:,}; "
                        "later inference is missing")
    return events, warnings


def _read_by_lines(path: Path, text: bytes) -> tuple[list[dict] | None, list[str]]:
    if not text.lstrip().startswith(b"["):
        return None, []
    lines = text.split(b"\n")
    events: list[dict] = []
    closed = False
    for n, line in enumerate(lines):
        line = line.strip().strip(b",")
        if line in (b"", b"["):
            continue
        if line == b"]":
            closed = True
            break
        if line.startswith(b"["):
            line = line[1:].strip()
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            if any(rest.strip() for rest in lines[n + 1 :]):
                return None, []  # not one event per line: parse as a document
            break
        if not isinstance(event, dict):
            return None, []
        events.append(event)
    if not events:
        return None, []
    warnings = [] if closed else [f"{path.name}: truncated; read its first {len(events)} whole events"]
    return events, warnings


def _read_document(path: Path, text: bytes) -> tuple[list[dict], list[str]]:
    try:
        events = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _read_whole_prefix(path, text.decode(errors="replace"))
    if not isinstance(events, list):
        raise OrtProfileError(f"{path}: not an ONNX Runtime profile (expected a JSON array)")
    return events, []


def _read_whole_prefix(path: Path, text: str) -> tuple[list[dict], list[str]]:
    start = text.find("[")
    if start < 0:
        raise OrtProfileError(f"{path}: not an ONNX Runtime profile (no JSON array)")
    decoder = json.JSONDecoder()
    events, pos, end = [], start + 1, len(text)
    while pos < end:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end or text[pos] == "]":
            break
        try:
            event, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        events.append(event)
    if not events:
        raise OrtProfileError(f"{path}: truncated before its first event")
    return events, [f"{path.name}: truncated; read its first {len(events)} whole events"]


def read_anchor(profile: Path) -> int | None:
    anchor = profile.with_name(profile.name + ANCHOR_SUFFIX)
    if not anchor.is_file():
        return None
    try:
        return int(json.loads(anchor.read_text())["start_ns"])
    except (ValueError, KeyError, TypeError, OSError):
        return None


def ingest_ort_profile(path: Path | str, start_ns: int | None = None) -> OrtProfile:
    """Events of one ORT profile on the epoch clock.

    ``start_ns`` defaults to the probe's anchor file; without either, the profile is placed
    at time zero and a warning says so.
    """
    path = Path(path)
    events, warnings = read_events(path)
    start = start_ns if start_ns is not None else read_anchor(path)
    if start is None:
        warnings.append(f"{path.name}: no profiling start time; events placed relative to zero")
    rows = [e for e in events if isinstance(e, dict) and e.get("ph") == "X" and "ts" in e]
    base = start or 0
    ts = np.fromiter((base + int(round(float(e["ts"]) * 1000)) for e in rows), dtype=np.int64, count=len(rows))
    dur = np.fromiter((int(round(float(e.get("dur", 0)) * 1000)) for e in rows), dtype=np.int64, count=len(rows))
    names, stages, args = [], [], []
    for event in rows:
        cat = event.get("cat", "")
        raw = event.get("args") or {}
        name = str(event.get("name", ""))
        if cat in ("Node", "Kernel"):
            for suffix in _NODE_SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            kept = {"cat": cat, "op": raw.get("op_name"), "provider": raw.get("provider")}
            for key in ("input_type_shape", "output_type_shape", "thread_scheduling_stats"):
                if raw.get(key):
                    kept[key] = raw[key]
            stages.append("inference")
        else:
            kept = {"cat": cat}
            stages.append("model_load" if name in ("model_loading_uri", "session_initialization") else
                          "inference" if name == "model_run" else None)
        names.append(name)
        args.append(orjson.dumps(kept).decode())
    pid = [int(e.get("pid", -1)) for e in rows]
    tid = [int(e.get("tid", -1)) for e in rows]
    frame = make_events(ts_ns=ts, source=SOURCE, kind="span", name=names, dur_ns=dur, pid=pid, tid=tid,
                        stage=stages, args=args)
    return OrtProfile(frame, start, warnings)
