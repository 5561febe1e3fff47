"""The fast kineto reader: a typed msgspec decode straight into the few fields we keep, batch
by batch as the file inflates, the batches shared among forked copies of this process where
the trace is big and cores are free (``probes.forked``). Raises NotTyped for a trace that does
not fit this shape (string timestamps, odd args, a layout the batching cannot cut), which
``probes.kineto`` then reads the generic way, with the same result."""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from contextlib import ExitStack
from functools import lru_cache, partial
from itertools import chain, compress, count, repeat
from operator import attrgetter, itemgetter
from typing import Annotated, NamedTuple, Union

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
from isal.igzip_lib import IsalError
from msgspec.structs import astuple, force_setattr

from probes.forked import ChildFailed, ChildRefused, Forked, fork_available, usable_cores
from probes.json_batches import NotBatchable, decode_in_batches, encode_each, text_pieces
from probes.kineto_format import (DEVICE_CATEGORIES, HOST_CATEGORIES, MEMCPY, MEMCPY_STAGE, SOURCE, KinetoError,
                                  KinetoTrace, copy_memory, us_array_to_ns)
from profiler.timeline import STAGES, gpu_pid, make_events

KEY = b"traceEvents"
SHARE_BYTES = 8 << 20  # JSON text per process below which a fork costs more than it saves
MAX_WORKERS = 8


class NotTyped(Exception):
    """The trace does not fit the typed decode; read it the generic way."""


_NO_RAW = msgspec.Raw(b"")  # absent; omitted when encoding
# A field of the args column that the ingest fills in after decoding: a trace's own args may
# not set it (any value but "" fails the typed decode, and the generic path ignores such args).
_Filled = Annotated[str, msgspec.Meta(max_length=0)]


class _Args(msgspec.Struct, omit_defaults=True, gc=False):
    """One row's args column, in output order: its category, the kineto ``args`` we keep (in
    ``ARG_KEYS`` order; others are skipped while parsing, never materialised), then what a
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


_BATCH_DECODER = msgspec.json.Decoder(list[_TraceEvent])
_NOT_TYPED = (msgspec.DecodeError, EOFError, IsalError, NotBatchable)


def decode_typed(raw: bytes) -> KinetoTrace:
    """The trace in ``raw`` (the file's bytes, gzipped or not); raises NotTyped where it does
    not fit the typed shape."""
    try:
        with ExitStack() as children:  # reaped after the frame: their exits overlap it
            columns, document = _decode(raw, share_count(raw), children)
            base = int(document.baseTimeNanoseconds or 0)
            processes, threads = columns.names()
            return KinetoTrace(columns.frame(base), list(document.deviceProperties or []), processes, threads, base)
    except (*_NOT_TYPED, ChildRefused):
        raise NotTyped from None


def share_count(raw: bytes) -> int:
    """How many processes decode the trace: ``PROF_INGEST_WORKERS`` where set; else one per
    usable core with at least SHARE_BYTES of JSON text each (at most MAX_WORKERS); one where
    this system cannot fork."""
    setting = os.environ.get("PROF_INGEST_WORKERS", "").strip()
    if setting and not (setting.isdigit() and int(setting) >= 1):
        raise KinetoError(f"PROF_INGEST_WORKERS={setting!r}: expected a whole number of processes, 1 or more")
    if not fork_available():
        return 1
    if setting:
        return int(setting)
    return max(1, min(usable_cores(), MAX_WORKERS, _text_size(raw) // SHARE_BYTES))


def _text_size(raw: bytes) -> int:
    """The size of the JSON text: a gzip file's trailer records it (modulo 4 GiB)."""
    if raw[:2] == b"\x1f\x8b" and len(raw) >= 18:
        return max(int.from_bytes(raw[-4:], "little"), len(raw))
    return len(raw)


def _decode(raw: bytes, workers: int, stack: ExitStack) -> tuple[_Columns, _Document]:
    """Every process cuts the same batches and decodes every ``workers``-th one (this one the
    first, and the document around the events); the others' columns come back as Arrow IPC.
    A share whose process failed is decoded here: nothing is lost to a crashed child."""
    columns = _Columns()
    if workers == 1:
        return columns, _decode_share(raw, columns, 0, 1)
    children = stack.enter_context(Forked(partial(_child_share, raw, workers), range(1, workers), _NOT_TYPED))
    started = time.monotonic()
    document = _decode_share(raw, columns, 0, workers)
    patience = max(60.0, 20 * (time.monotonic() - started))
    for rank in range(1, workers):
        try:
            columns.join_ipc(children.result(rank, patience))
        except ChildFailed:
            _decode_share(raw, columns, rank, workers)
    return columns, document


def _decode_share(raw: bytes, columns: _Columns, rank: int, workers: int) -> _Document | None:
    """Decodes the batches of ``rank``'s share into ``columns``; returns the document (rank 0 only)."""
    return decode_in_batches(text_pieces(raw), KEY, _BATCH_DECODER, _DECODER, columns.add, (rank, workers))


def _child_share(raw: bytes, workers: int, rank: int) -> pa.Buffer:
    columns = _Columns()
    _decode_share(raw, columns, rank, workers)
    return columns.to_ipc()


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
    """The kept events of a trace, or of one process's share of it, gathered batch by batch as
    columns and joined once in the order of the batches in the file."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, _Batch]] = []  # (index of the batch in the file, its columns)
        self.named: list[tuple[int, int, int | None, str]] = []  # (batch index, pid, tid or None: the process, name)
        self.name_codes: defaultdict[str, int] = defaultdict(count().__next__)  # a new name takes the next code

    def add(self, index: int, events: list) -> None:
        """Columns of a batch's rows, as lists first: ``astuple`` reads every field of a struct
        in one call, and a strided slice of all of them in a row is one column (a third faster
        than a ``map`` per field); categories become small integer codes that index
        per-category tables."""
        fields = list(chain.from_iterable(map(astuple, events)))
        columns = [fields[i::_N_FIELDS] for i in range(_N_FIELDS)]
        codes = np.fromiter(map(_CAT_CODE.get, columns[0], repeat(-1)), np.int8, len(columns[0]))
        if (codes < 0).any():
            columns = self._drop_rows(index, columns, codes < 0)
            codes = codes[codes >= 0]
        cats, names, pids, tids, ts, durs, args = columns
        pid, tid = _int_column(pids, -1), _int_column(tids, -1)
        device = _CAT_IS_DEVICE[codes]
        if device.any():
            on_gpu = device.tolist()
            pid[device], tid[device] = _gpu_lanes(*(list(compress(column, on_gpu)) for column in (args, pids, tids)))
        deque(map(force_setattr, args, repeat("cat"), cats), maxlen=0)  # a third faster than setattr
        stages = _CAT_STAGE_CODE[codes]
        for i in np.flatnonzero(codes == _MEMCPY_CODE).tolist():
            stages[i], copy, memory = _copy_named(names[i])
            force_setattr(args[i], "copy", copy)
            force_setattr(args[i], "memory", memory)
        ts_ns, dur_ns = (us_array_to_ns(np.fromiter(column, np.float64, len(column))) for column in (ts, durs))
        self.batches.append((index, _Batch(stages, ts_ns, np.maximum(dur_ns, 0, out=dur_ns), pid, tid,
                                           np.fromiter(map(self.name_codes.__getitem__, names), np.int32, len(names)),
                                           encode_each(args, _ENCODER))))

    def _drop_rows(self, index: int, columns: list[list], dropped: np.ndarray) -> list[list]:
        """The columns less the rows of categories we drop, among which the metadata events
        name processes and threads."""
        mask = dropped.tolist()
        for _, name, pid, tid, _, _, args in zip(*(compress(column, mask) for column in columns)):
            if isinstance(args, _NameArgs) and isinstance(pid, int) and args.name is not None:
                if name == "process_name":
                    self.named.append((index, pid, None, args.name))
                elif name == "thread_name" and isinstance(tid, int):
                    self.named.append((index, pid, tid, args.name))
        kept = (~dropped).tolist()
        return [list(compress(column, kept)) for column in columns]

    def names(self) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
        """(process names, thread names); where the file names one twice, the later wins."""
        processes: dict[int, str] = {}
        threads: dict[tuple[int, int], str] = {}
        for _, pid, tid, name in sorted(self.named, key=itemgetter(0)):  # stable: file order within a batch
            if tid is None:
                processes[pid] = name
            else:
                threads[(pid, tid)] = name
        return processes, threads

    def frame(self, base_ns: int) -> pd.DataFrame:
        columns = _joined([batch for _, batch in sorted(self.batches, key=itemgetter(0))])
        np.add(columns.ts_ns, base_ns, out=columns.ts_ns)
        return make_events(ts_ns=columns.ts_ns, source=SOURCE, kind="span",
                           name=_sorted_categorical(columns.names, list(self.name_codes)),
                           dur_ns=columns.dur_ns, pid=columns.pid, tid=columns.tid,
                           stage=pd.Categorical.from_codes(columns.stages, categories=STAGES),
                           args=columns.args.cast(pa.large_string()))  # checks the UTF-8 of raw values

    def to_ipc(self) -> pa.Buffer:
        """This share's columns as one Arrow IPC stream, for the process that joins the shares:
        the columns, and in the schema's metadata the names the codes stand for, each batch's
        index and length, and the process and thread names read."""
        joined = _joined([batch for _, batch in self.batches] or [_EMPTY])
        record = pa.record_batch([pa.array(column) for column in joined], names=list(_Batch._fields))
        about = {"names": list(self.name_codes), "named": self.named,
                 "batches": [(index, len(batch.ts_ns)) for index, batch in self.batches]}
        record = record.replace_schema_metadata({"prof": msgspec.json.encode(about)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, record.schema) as writer:
            writer.write_batch(record)
        return sink.getvalue()

    def join_ipc(self, data: bytes) -> None:
        """Adds the share another process read (``to_ipc``), its name codes mapped onto ours."""
        record = pa.ipc.open_stream(data).read_next_batch()  # to_ipc writes exactly one
        about = msgspec.json.decode(record.schema.metadata[b"prof"])
        ours = np.fromiter(map(self.name_codes.__getitem__, about["names"]), np.int32, len(about["names"]))
        theirs = _Batch(*(column.to_numpy() for column in record.columns[:-1]), record.column("args"))
        columns = theirs._replace(names=ours[theirs.names])
        start = 0
        for index, length in about["batches"]:
            self.batches.append((index, _Batch(*(column[start:start + length] for column in columns))))
            start += length
        self.named.extend((index, pid, tid, name) for index, pid, tid, name in about["named"])


def _joined(batches: list[_Batch]) -> _Batch:
    """The batches' columns end to end."""
    return _Batch(*(np.concatenate(parts) if isinstance(parts[0], np.ndarray) else pa.concat_arrays(parts)
                    for parts in zip(*batches)))


_EMPTY = _Batch(np.empty(0, np.int8), *(np.empty(0, np.int64) for _ in range(4)), np.empty(0, np.int32),
                pa.array([], pa.large_binary()))


@lru_cache(maxsize=256)  # a trace names its copies a handful of ways, thousands of times
def _copy_named(name: str) -> tuple[int, str, str]:
    """(stage code, "copy", "memory") of a memcpy from its name ("Memcpy HtoD (Pageable ->
    Device)"); the args stay unset ("") for a name that does not say."""
    match = MEMCPY.match(name)
    if not match:
        return -1, "", ""
    direction, src, dst = match.groups()
    return STAGES.index(MEMCPY_STAGE.get(direction, "inference")), direction, copy_memory(src, dst)


def _gpu_lanes(args: list[_Args], pids: list, tids: list) -> tuple[np.ndarray, np.ndarray]:
    """(pid, tid) of device events: the GPU of the ``device`` arg (else the event's pid) and
    the ``stream`` arg (else the event's tid), as the generic path reads them."""
    device = _int_column(list(map(_DEVICE, args)), _ABSENT)
    stream = _int_column(list(map(_STREAM, args)), _ABSENT)
    device = np.where(device != _ABSENT, device, _int_column(pids, 0))
    stream = np.where(stream != _ABSENT, stream, _int_column(tids, -1))
    return gpu_pid(device), stream


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
