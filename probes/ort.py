"""ONNX Runtime profiling: switch it on at session creation, read its JSON back.

ORT writes a bare JSON array of Chrome ``X`` events (cats ``Session``, ``Node`` and, on some
providers, ``Kernel``) whose ``ts`` is µs since profiling started; the absolute start is only
known from ``InferenceSession.get_profiling_start_time_ns()``, so the probe writes it beside
the profile in ``<profile>.anchor.json``. A profile cut off by a crash, or by ORT's cap of one
million events, is read up to its last whole event, with a warning.
"""

from __future__ import annotations

import io
from array import array
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
    """The whole events of an ORT profile (a list), tolerating a truncated tail."""
    warnings: list[str] = []
    events = list(iter_events(path, warnings))
    return events, warnings


def iter_events(path: Path, warnings: list[str]) -> Iterator[dict]:
    """Stream the whole events of an ORT profile; warnings are appended as they arise.

    ORT writes one event per line, so lines are parsed one at a time and each dict can be
    dropped once read (a cut-off last line is simply the end); a file laid out otherwise is
    parsed as a whole document.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise OrtProfileError(f"{path}: cannot read ({exc.strerror})") from None
    if _one_event_per_line(text):
        events = _iter_lines(path, text, warnings)
    else:
        document, document_warnings = _read_document(path, text)
        warnings.extend(document_warnings)
        events = iter(document)
    count = 0
    for event in events:
        count += 1
        yield event
    if count == 0:
        raise OrtProfileError(f"{path}: no events: not an ONNX Runtime profile, or truncated before its first")
    if count >= EVENT_CAP:
        warnings.append(f"{path.name}: {count} events: ORT stops recording at {EVENT_CAP:,}; "
                        "later inference is missing")


def _one_event_per_line(text: bytes) -> bool:
    head = text[:4096].lstrip()
    if not head.startswith(b"["):
        return False
    lines = [line.strip().strip(b",").lstrip(b"[").strip() for line in head.split(b"\n")[:3]]
    candidates = [line for line in lines if line and line != b"]"]
    if not candidates:
        return False
    try:
        return isinstance(orjson.loads(candidates[0]), dict)
    except orjson.JSONDecodeError:
        return False


def _iter_lines(path: Path, text: bytes, warnings: list[str]) -> Iterator[dict]:
    closed, count = False, 0
    for raw_line in io.BytesIO(text):
        line = raw_line.strip().strip(b",")
        if line.startswith(b"["):
            line = line[1:].strip()
        if line == b"]":
            closed = True
            break
        if not line:
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            break  # a line cut off mid-event: the end of what was written
        if isinstance(event, dict):
            count += 1
            yield event
    if not closed and count:
        warnings.append(f"{path.name}: truncated; read its first {count} whole events")


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


def _describe(event: dict) -> tuple[str, str | None, dict]:
    """(name without ORT's suffix, stage, the args we keep) of one event."""
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
        return name, "inference", kept
    stage = {"model_loading_uri": "model_load", "session_initialization": "model_load",
             "model_run": "inference"}.get(name)
    return name, stage, {"cat": cat}


def ingest_ort_profile(path: Path | str, start_ns: int | None = None) -> OrtProfile:
    """Events of one ORT profile on the epoch clock.

    ``start_ns`` defaults to the probe's anchor file; without either, the profile is placed
    at time zero and a warning says so.
    """
    path = Path(path)
    warnings: list[str] = []
    start = start_ns if start_ns is not None else read_anchor(path)
    base = start or 0
    # Fixed-width arrays for the numbers and one shared object per distinct name and args
    # text: a profile repeats the same nodes run after run, so 200k events hold a few
    # hundred distinct strings, not 200k of each.
    ts, dur, pid, tid = array("q"), array("q"), array("q"), array("q")
    names, stages, args = [], [], []
    interned: dict[str, str] = {}
    for event in iter_events(path, warnings):
        if event.get("ph") != "X" or "ts" not in event:
            continue
        ts.append(base + int(round(float(event["ts"]) * 1000)))
        dur.append(int(round(float(event.get("dur", 0)) * 1000)))
        pid.append(int(event.get("pid", -1)))
        tid.append(int(event.get("tid", -1)))
        name, stage, kept = _describe(event)
        names.append(interned.setdefault(name, name))
        stages.append(stage)
        text = orjson.dumps(kept).decode()
        args.append(interned.setdefault(text, text))
    if start is None:
        warnings.append(f"{path.name}: no profiling start time; events placed relative to zero")
    frame = make_events(ts_ns=np.frombuffer(ts, dtype=np.int64), source=SOURCE, kind="span", name=names,
                        dur_ns=np.frombuffer(dur, dtype=np.int64), pid=np.frombuffer(pid, dtype=np.int64),
                        tid=np.frombuffer(tid, dtype=np.int64), stage=stages, args=args)
    return OrtProfile(frame, start, warnings)
