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
from collections import defaultdict, deque
from dataclasses import dataclass, field
from itertools import chain, compress, count, repeat
from operator import attrgetter
from pathlib import Path
from typing import Annotated, NamedTuple, Union

import msgspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from isal import igzip
from isal.igzip_lib import IsalError
from msgspec.structs import astuple, force_setattr

from probes.json_batches import NotBatchable, decode_in_batches, encode_each, text_pieces
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
# A field of the args column that the ingest fills in after decoding: a trace's own args may
# not set it (any value but "" fails the typed decode, and the generic path ignores such args).
_Filled = Annotated[str, msgspec.Meta(max_length=0)]


class _Args(msgspec.Struct, omit_defaults=True, gc=False):
    """One row's args column, in output order: its category, the kineto ``args`` we keep (in
    ``_ARG_KEYS`` order; others are skipped while parsing, never materialised), then what a
    copy's name tells. So one encode writes the final JSON of a whole batch's rows. Few
    decoded fields on purpose: each one costs every event's decode."""
    cat: _Filled = ""
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
    copy: _Filled = ""
    memory: _Filled = ""


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
    name: str | None = None  # the process's or thread's


class _Metadata(msgspec.Struct, tag_field="ph", tag="M", gc=False):
    """process_name / thread_name, laid out field for field as ``_Complete``, so that one pass
    reads every event of a batch (the other phases have no fields). With no category (one of
    its own fails the typed decode) it is among the rows dropped, where its names are read."""
    cat: _Filled = ""
    name: str = ""
    pid: int | str | None = None
    tid: int | str | None = None
    ts: msgspec.Raw = _NO_RAW  # not read
    dur: msgspec.Raw = _NO_RAW
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
_MEMCPY_CODE = _CAT_CODE["gpu_memcpy"]
_CAT_IS_DEVICE = np.array([cat in DEVICE_CATEGORIES for cat in _KEPT])
_CAT_STAGE = {"kernel": "inference", "gpu_memset": "inference"}
_CAT_STAGE_CODE = np.array([STAGES.index(_CAT_STAGE[c]) if c in _CAT_STAGE else -1 for c in _KEPT], np.int8)
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


_N_FIELDS = len(_Complete.__struct_fields__)  # cat, name, pid, tid, ts, dur, args
assert _Metadata.__struct_fields__ == _Complete.__struct_fields__, "one layout: a batch's fields are read in one pass"
_DEVICE, _STREAM = attrgetter("device"), attrgetter("stream")


class _Batch(NamedTuple):
    """One batch's kept events as columns."""
    stages: np.ndarray  # stage code: index into STAGES, -1 for none
    ts_ns: np.ndarray  # before the trace's base is added
    dur_ns: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    names: np.ndarray  # code: the order in which the trace first names it
    args: pa.Array  # each event's args column, JSON text (binary until the UTF-8 is checked)


class _Columns:
    """The kept events of a trace, gathered batch by batch as columns and joined once."""

    def __init__(self) -> None:
        self.batches: list[_Batch] = []
        self.process_names: dict[int, str] = {}
        self.thread_names: dict[tuple[int, int], str] = {}
        self.name_codes: defaultdict[str, int] = defaultdict(count().__next__)  # a new name takes the next code

    def add(self, events: list) -> None:
        """Columns of a batch's rows, as lists first: ``astuple`` reads every field of a struct
        in one call, and a strided slice of all of them in a row is one column (a third faster
        than a ``map`` per field); categories become small integer codes that index
        per-category tables."""
        fields = list(chain.from_iterable(map(astuple, events)))
        columns = [fields[i::_N_FIELDS] for i in range(_N_FIELDS)]
        codes = np.fromiter(map(_CAT_CODE.get, columns[0], repeat(-1)), np.int8, len(columns[0]))
        if (codes < 0).any():
            columns = self._drop_rows(columns, codes < 0)
            codes = codes[codes >= 0]
        cats, names, pids, tids, ts, durs, args = columns
        pid, tid = _int_column(pids, -1), _int_column(tids, -1)
        on_gpu = np.flatnonzero(_CAT_IS_DEVICE[codes]).tolist()
        pid[on_gpu], tid[on_gpu] = _gpu_lanes([args[i] for i in on_gpu], [pids[i] for i in on_gpu],
                                              [tids[i] for i in on_gpu])
        deque(map(force_setattr, args, repeat("cat"), cats), maxlen=0)  # a third faster than setattr
        stages = _CAT_STAGE_CODE[codes]
        for i in np.flatnonzero(codes == _MEMCPY_CODE).tolist():
            stages[i] = _describe_copy(names[i], args[i])
        ts_ns, dur_ns = (_us_array_to_ns(np.fromiter(column, np.float64, len(column))) for column in (ts, durs))
        self.batches.append(_Batch(stages, ts_ns, np.maximum(dur_ns, 0, out=dur_ns), pid, tid,
                                   np.fromiter(map(self.name_codes.__getitem__, names), np.int32, len(names)),
                                   encode_each(args, _ENCODER)))

    def _drop_rows(self, columns: list[list], dropped: np.ndarray) -> list[list]:
        """The columns less the rows of categories we drop, among which the metadata events
        name processes and threads."""
        mask = dropped.tolist()
        for _, name, pid, tid, _, _, args in zip(*(compress(column, mask) for column in columns)):
            if isinstance(args, _NameArgs) and isinstance(pid, int) and args.name is not None:
                if name == "process_name":
                    self.process_names[pid] = args.name
                elif name == "thread_name" and isinstance(tid, int):
                    self.thread_names[(pid, tid)] = args.name
        kept = (~dropped).tolist()
        return [list(compress(column, kept)) for column in columns]

    def frame(self, base_ns: int) -> pd.DataFrame:
        columns = _Batch(*(np.concatenate(parts) if isinstance(parts[0], np.ndarray) else pa.concat_arrays(parts)
                           for parts in zip(*self.batches)))
        np.add(columns.ts_ns, base_ns, out=columns.ts_ns)
        return make_events(ts_ns=columns.ts_ns, source=SOURCE, kind="span",
                           name=_sorted_categorical(columns.names, list(self.name_codes)),
                           dur_ns=columns.dur_ns, pid=columns.pid, tid=columns.tid,
                           stage=pd.Categorical.from_codes(columns.stages, categories=STAGES),
                           args=columns.args.cast(pa.large_string()))  # checks the UTF-8 of raw values


def _describe_copy(name: str, args: _Args) -> int:
    """Fills the "copy" and "memory" args of a memcpy row from its name ("Memcpy HtoD
    (Pageable -> Device)"); returns its stage code."""
    match = _MEMCPY.match(name)
    if not match:
        return -1
    direction, src, dst = match.groups()
    args.copy, args.memory = direction, _copy_memory(src, dst)
    return STAGES.index(_MEMCPY_STAGE.get(direction, "inference"))


def _gpu_lanes(args: list[_Args], pids: list, tids: list) -> tuple[np.ndarray, np.ndarray]:
    """(pid, tid) of device events: the GPU of the ``device`` arg (else the event's pid) and
    the ``stream`` arg (else the event's tid), as the generic path reads them."""
    device = _int_column(list(map(_DEVICE, args)), _ABSENT)
    stream = _int_column(list(map(_STREAM, args)), _ABSENT)
    device = np.where(device != _ABSENT, device, _int_column(pids, 0))
    stream = np.where(stream != _ABSENT, stream, _int_column(tids, -1))
    return gpu_pid(device), stream


def _copy_memory(src: str, dst: str) -> str:
    return "pinned" if "Pinned" in (src, dst) else "pageable" if "Pageable" in (src, dst) else "device"


def _sorted_categorical(codes: np.ndarray, values: list[str]) -> pd.Categorical:
    """``pd.Categorical`` (sorted categories, as pandas builds it from the values) of the
    ``values[codes]``."""
    order = sorted(range(len(values)), key=values.__getitem__)
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return pd.Categorical.from_codes(rank[codes], categories=[values[i] for i in order])


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
        args.append(orjson.dumps(kept).decode())
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
    fraction = np.subtract(array, whole)
    fraction *= 1000
    ns = whole.astype(np.int64)
    ns *= 1000
    ns += np.rint(fraction, out=fraction).astype(np.int64)  # in place: a new array costs fresh pages
    return ns


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
