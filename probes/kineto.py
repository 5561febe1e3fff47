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

import re
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple, Union

import msgspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from isal import igzip
from isal.igzip_lib import IsalError

from probes.json_batches import NotBatchable, decode_in_batches, text_pieces
from profiler.timeline import STAGES, gpu_pid, make_events

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
    """(decompressed bytes, parsed JSON) of a plain or gzipped JSON file (ISA-L inflates two to
    three times as fast as zlib). Raises OSError, EOFError or ValueError as reading, gunzip or
    parsing fail."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = igzip.decompress(raw)
        except IsalError as exc:  # a corrupt stream
            raise ValueError(f"corrupt gzip data ({exc})") from None
    return raw, orjson.loads(raw)


_NO_RAW = msgspec.Raw(b"")  # absent; omitted when encoding


class _Args(msgspec.Struct, omit_defaults=True, gc=False):
    """The kineto ``args`` we keep, in ``_ARG_KEYS`` order (others are skipped while parsing,
    never materialised). Few fields on purpose: each one costs every event's decode."""
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


class _Complete(msgspec.Struct, tag_field="ph", tag="X", gc=False):
    """A complete ("X") event: the only phase whose events become rows."""
    cat: str = ""
    name: str = ""
    pid: int | str | None = None
    tid: int | str | None = None
    ts: float = 0.0
    dur: float = 0.0
    args: _Args = msgspec.field(default_factory=_Args)


class _NameArgs(msgspec.Struct, gc=False):
    name: str | None = None


class _Metadata(msgspec.Struct, tag_field="ph", tag="M", gc=False):
    """process_name / thread_name."""
    name: str = ""
    pid: int | str | None = None
    tid: int | str | None = None
    args: _NameArgs | None = None


# Every other phase of the Chrome trace format decodes to an empty struct: its fields are
# skipped, never built (a third of a training trace is ac2g flow events). A phase outside the
# format fails the typed decode, and the trace takes the generic path.
_SKIPPED_PHASES = tuple(msgspec.defstruct(f"_Phase{ord(phase)}", [], tag_field="ph", tag=phase, gc=False)
                        for phase in "BEiICbneSTpFstfPNODVvRc()")


_TraceEvent = Union[(_Complete, _Metadata, *_SKIPPED_PHASES)]  # type: ignore[valid-type]


class _Document(msgspec.Struct, gc=False):
    traceEvents: list[_TraceEvent]
    deviceProperties: list[dict] | None = None
    baseTimeNanoseconds: int | None = None


_DECODER = msgspec.json.Decoder(_Document)
_ENCODER = msgspec.json.Encoder()
_KEPT = tuple(sorted(HOST_CATEGORIES | DEVICE_CATEGORIES))  # a kept category's code is its index
_CAT_CODE = {cat: code for code, cat in enumerate(_KEPT)}
_CAT_IS_DEVICE = np.array([cat in DEVICE_CATEGORIES for cat in _KEPT])
_CAT_STAGE = {"kernel": "inference", "gpu_memset": "inference"}
_CAT_STAGE_CODE = np.array([STAGES.index(_CAT_STAGE[c]) if c in _CAT_STAGE else -1 for c in _KEPT], np.int8)
_CAT_HEAD = pa.array([f'{{"cat":"{cat}"'.encode() for cat in _KEPT])
_ABSENT = np.iinfo(np.int64).min  # an int arg that is missing (or null)


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
    building Python objects), batch by batch as the file inflates; a trace that does not fit
    that shape (string timestamps, odd args) goes through the generic JSON path instead, with
    the same result. So does an unreadable one, which raises KinetoError there."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KinetoError(f"{path}: not a readable kineto trace ({exc})") from None
    try:
        columns = _Columns()
        document = decode_in_batches(text_pieces(raw), b"traceEvents", _BATCH_DECODER, _DECODER, columns.add)
    except (msgspec.DecodeError, EOFError, IsalError, NotBatchable):
        return _ingest_generic(read_trace_json(path))
    base = int(document.baseTimeNanoseconds or 0)
    return KinetoTrace(columns.frame(base), list(document.deviceProperties or []), columns.process_names,
                       columns.thread_names, base)


_BATCH_DECODER = msgspec.json.Decoder(list[_TraceEvent])


_CAT, _NAME, _PID, _TID = attrgetter("cat"), attrgetter("name"), attrgetter("pid"), attrgetter("tid")
_TS, _DUR, _ARGS = attrgetter("ts"), attrgetter("dur"), attrgetter("args")


class _Batch(NamedTuple):
    """One batch's kept events as columns."""
    codes: np.ndarray  # category code: index into _KEPT
    ts_us: np.ndarray  # as written, before the trace's base
    dur_us: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    names: pa.Array
    args: pa.Array  # each event's kept args as msgspec encodes them, less the braces


class _Columns:
    """The kept events of a trace, gathered batch by batch as columns and joined once."""

    def __init__(self) -> None:
        self.batches: list[_Batch] = []
        self.process_names: dict[int, str] = {}
        self.thread_names: dict[tuple[int, int], str] = {}

    def add(self, events: list) -> None:
        for event in [e for e in events if e.__class__ is _Metadata]:
            if isinstance(event.pid, int) and event.args is not None and event.args.name is not None:
                if event.name == "process_name":
                    self.process_names[event.pid] = event.args.name
                elif event.name == "thread_name" and isinstance(event.tid, int):
                    self.thread_names[(event.pid, event.tid)] = event.args.name
        self.batches.append(_batch_columns([e for e in events if e.__class__ is _Complete]))

    def frame(self, base_ns: int) -> pd.DataFrame:
        columns = _Batch(*(np.concatenate(parts) if isinstance(parts[0], np.ndarray) else pa.concat_arrays(parts)
                           for parts in zip(*self.batches)))
        stages, copy_fields = _stages_and_copies(columns.codes, columns.names)
        return make_events(ts_ns=base_ns + _us_array_to_ns(columns.ts_us), source=SOURCE, kind="span",
                           name=_categorical(columns.names), dur_ns=np.maximum(_us_array_to_ns(columns.dur_us), 0),
                           pid=columns.pid, tid=columns.tid, stage=pd.Categorical.from_codes(stages, categories=STAGES),
                           args=_args_json(columns.args, columns.codes, copy_fields))


def _stages_and_copies(codes: np.ndarray, names: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Each row's stage code, and the "copy" and "memory" fields that a memcpy row adds to its
    args, both read from the copy's name ("Memcpy HtoD (Pageable -> Device)")."""
    stages = _CAT_STAGE_CODE[codes]
    fields: list[bytes | None] = [None] * len(codes)
    copies = np.flatnonzero(codes == _CAT_CODE["gpu_memcpy"])
    for i, name in zip(copies.tolist(), names.take(copies).to_pylist()):
        match = _MEMCPY.match(name)
        if match:
            direction, src, dst = match.groups()
            fields[i] = f'"copy":"{direction}","memory":"{_copy_memory(src, dst)}"'.encode()
            stages[i] = STAGES.index(_MEMCPY_STAGE.get(direction, "inference"))
    return stages, pa.array(fields, pa.binary())


def _batch_columns(rows: list[_Complete]) -> _Batch:
    """Columns pulled from the decoded structs by C-level ``map``s (no Python loop over all
    events); categories become small integer codes that index per-category tables."""
    codes = np.fromiter(map(_CAT_CODE.get, map(_CAT, rows), repeat(-1)), np.int8, len(rows))
    if (codes < 0).any():
        rows = list(compress(rows, codes >= 0))
        codes = codes[codes >= 0]
    pid = _int_column(list(map(_PID, rows)), -1)
    tid = _int_column(list(map(_TID, rows)), -1)
    on_gpu = np.flatnonzero(_CAT_IS_DEVICE[codes])
    pid[on_gpu], tid[on_gpu] = _gpu_lanes([rows[i] for i in on_gpu.tolist()])
    return _Batch(codes, np.fromiter(map(_TS, rows), np.float64, len(rows)),
                  np.fromiter(map(_DUR, rows), np.float64, len(rows)), pid, tid,
                  pa.array(list(map(_NAME, rows)), pa.string()), _encoded_args(list(map(_ARGS, rows))))


def _encoded_args(args: list[_Args]) -> pa.Array:
    """Each row's kept args as msgspec encodes them, less the braces. One encode of the whole
    list takes half the time of one per row; the list splits at its "},{" seams, unless one
    also falls inside a value (a string or raw JSON), where it is encoded row by row."""
    text = bytearray()
    _ENCODER.encode_into(args, text)
    text[-1:] = b",{"  # "[{a},{b}]" becomes "[{a},{b},{": a seam after every row
    marks = np.frombuffer(text, np.uint8)
    commas = np.flatnonzero(marks == ord(","))
    seams = commas[(marks[commas - 1] == ord("}")) & (marks[commas + 1] == ord("{"))]
    if len(seams) != len(args):
        return pc.binary_slice(pa.array(list(map(_ENCODER.encode, args)), pa.binary()), 1, -1)
    offsets = np.concatenate(([2], seams + 2)).astype(np.int32)  # row i: its args, then "},{"
    rows = pa.Array.from_buffers(pa.binary(), len(args), [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    return pc.binary_slice(rows, 0, -3)


def _gpu_lanes(rows: list[_Complete]) -> tuple[np.ndarray, np.ndarray]:
    """(pid, tid) of device events: the GPU of the ``device`` arg (else the event's pid) and
    the ``stream`` arg (else the event's tid), as the generic path reads them."""
    device = _int_column([e.args.device for e in rows], _ABSENT)
    stream = _int_column([e.args.stream for e in rows], _ABSENT)
    device = np.where(device != _ABSENT, device, _int_column([e.pid for e in rows], 0))
    stream = np.where(stream != _ABSENT, stream, _int_column([e.tid for e in rows], -1))
    return gpu_pid(device), stream


def _copy_memory(src: str, dst: str) -> str:
    return "pinned" if "Pinned" in (src, dst) else "pageable" if "Pageable" in (src, dst) else "device"


def _args_json(args: pa.Array, codes: np.ndarray, extras: pa.Array) -> pa.Array:
    """Per row ``{"cat":…,<kept args>,<extras>}`` as compact JSON text, joined column-wise by
    Arrow from the category head, the encoded args (less their braces) and the extra fields."""
    inner = pc.if_else(pc.equal(args, b""), pa.scalar(None, pa.binary()), args)  # nulls are skipped
    joined = pc.binary_join_element_wise(_CAT_HEAD.take(pa.array(codes)), inner, extras, b",",
                                         null_handling="skip")
    return pc.binary_join_element_wise(joined, b"}", b"").cast(pa.string())


def _categorical(values: pa.Array) -> pd.Categorical:
    """``pd.Categorical(values)`` (sorted categories) through Arrow's hash encoding, which is
    faster on many repeats of a few hundred long kernel names."""
    encoded = values.dictionary_encode()
    uniques = encoded.dictionary.to_pylist()
    order = sorted(range(len(uniques)), key=uniques.__getitem__)
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return pd.Categorical.from_codes(rank[encoded.indices.to_numpy()], categories=[uniques[i] for i in order])


def _int_column(values: list, default: int) -> np.ndarray:
    """int64 array of ``values``; anything not an int (None, a string pid such as "Spans") → default."""
    array = np.array(values)
    if array.dtype.kind == "i":  # numpy infers a string or object dtype if any value is not an int
        return array.astype(np.int64, copy=False)
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
                kept["memory"] = _copy_memory(src, dst)
                stages[i] = _MEMCPY_STAGE.get(direction, "inference")
        elif cat in ("kernel", "gpu_memset"):
            stages[i] = "inference"
        args.append(_dumps(kept))
    return make_events(ts_ns=ts_ns, source=SOURCE, kind="span", name=names, dur_ns=dur_ns, pid=pid, tid=tid,
                       stage=stages, args=args)


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _us_array_to_ns(values: list | np.ndarray) -> np.ndarray:
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
