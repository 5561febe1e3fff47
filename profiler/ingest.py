"""Raw artifacts -> one timeline. One ingester per probe, listed in ``INGESTERS``; each reads
its ``raw/<probe>/`` directory. A probe whose artifacts are broken adds a note and the
others go on."""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from probes import kineto, loadgen, nvml, ort, proc, pyspy, scalene, stages
from probes.http import probe as wire
from profiler.timeline import StackTable, make_events, merge_events


@dataclass
class IngestResult:
    """A probe's events, as one frame or several: they are merged once, with every source."""

    events: pd.DataFrame | list[pd.DataFrame]
    warnings: list[str] = field(default_factory=list)


def _ingest_stages(directory: Path, stacks: StackTable) -> IngestResult:
    return IngestResult(stages.span_file_frames(sorted(directory.glob("spans-*.npz"))))


def _ingest_ort(directory: Path, stacks: StackTable) -> IngestResult:
    frames, warnings = [], []
    for path in sorted(p for p in directory.glob("*.json") if not p.name.endswith(ort.ANCHOR_SUFFIX)):
        profile = ort.ingest_ort_profile(path)
        frames.append(profile.events)
        warnings.extend(profile.warnings)
    return IngestResult(merge_events(frames), warnings)


def _ingest_torch(directory: Path, stacks: StackTable) -> IngestResult:
    paths = sorted([*directory.glob("*.json"), *directory.glob("*.json.gz")])
    return IngestResult(merge_events(kineto.ingest_kineto(p).events for p in paths))


def _ingest_pyspy(directory: Path, stacks: StackTable) -> IngestResult:
    frames, warnings = [], []
    for meta in sorted(directory.glob("pyspy-*.meta.json")):
        pid = int(json.loads(meta.read_text())["pid"])
        if (directory / pyspy.TRACE_FILE.format(pid=pid)).is_file():
            frames.append(pyspy.ingest_recording(directory, pid, stacks))
        else:
            warnings.append(f"py-spy wrote no trace for pid {pid} (see {directory}/pyspy-{pid}.log)")
    for path in sorted(directory.glob("imported-*.json")):
        if path.name.endswith(".speedscope.json"):
            frames.append(pyspy.ingest_speedscope(path, stacks))
            warnings.append(f"{path.name}: speedscope keeps no wall-clock times; samples laid end to end")
        else:
            frames.append(pyspy.ingest_pyspy_chrometrace(path, 0, 100, stacks))
            warnings.append(f"{path.name}: imported py-spy trace has no clock anchor; placed at time zero")
    return IngestResult(merge_events(frames), warnings)


def _ingest_scalene(directory: Path, stacks: StackTable) -> IngestResult:
    return IngestResult(merge_events(scalene.ingest_scalene(p, stacks) for p in sorted(directory.glob("*.json"))))


def _ingest_proc(directory: Path, stacks: StackTable) -> IngestResult:
    return IngestResult(merge_events(proc.ingest_proc(p) for p in sorted(directory.glob("proc-*.jsonl"))))


def _ingest_nvml(directory: Path, stacks: StackTable) -> IngestResult:
    path = directory / nvml.FILE
    return IngestResult(nvml.ingest_nvml(path) if path.is_file() else make_events(
        ts_ns=[], source="nvml", kind="counter", name=[]))


# JSON-parsing ingesters first: their transient memory is then spent while little else is held.
def _ingest_loadgen(directory: Path, stacks: StackTable) -> IngestResult:
    frame = loadgen.ingest_directory(directory)
    return IngestResult([] if frame is None else [frame])


def _ingest_http(directory: Path, stacks: StackTable) -> IngestResult:
    return IngestResult(wire.ingest_wire(directory), wire.problems_of(wire.read_stats(directory)))


INGESTERS: dict[str, Callable[[Path, StackTable], IngestResult]] = {
    "ort": _ingest_ort,
    "torch": _ingest_torch,
    "stages": _ingest_stages,
    "pyspy": _ingest_pyspy,
    "proc": _ingest_proc,
    "nvml": _ingest_nvml,
    "scalene": _ingest_scalene,
    "loadgen": _ingest_loadgen,
    "http": _ingest_http,
}


def ingest_raw(raw: Path) -> tuple[pd.DataFrame, StackTable, list[str]]:
    """Every probe directory under ``raw`` -> (merged events, stack table, warnings)."""
    _return_big_frees_to_the_os()
    stacks = StackTable()
    frames, warnings = [], []
    for probe, ingest in INGESTERS.items():
        directory = raw / probe
        if not directory.is_dir():
            continue
        try:
            result = ingest(directory, stacks)
        except Exception as exc:  # one probe's broken artifact must not cost the others theirs
            warnings.append(f"{probe}: not ingested ({type(exc).__name__}: {exc})")
            continue
        frames.extend(result.events if isinstance(result.events, list) else [result.events])
        warnings.extend(f"{probe}: {w}" for w in result.warnings)
        pa.default_memory_pool().release_unused()  # hand a parser's scratch back before the next one
    merged = merge_events(frames, consume=True)
    frames.clear()
    pa.default_memory_pool().release_unused()
    return merged, stacks, warnings


def _return_big_frees_to_the_os() -> None:
    """glibc only: serve allocations of 1 MiB and more by mmap, always. Ingest frees many
    column-sized arrays while allocating the merged ones; glibc's default (a threshold that
    rises after each large free) keeps those frees in the heap, so the peak resident size
    grows by a column or two per merged column. Measured on a 1M-event session: peak RSS
    ~306 -> ~282 MB, no change in time. Process-wide and harmless elsewhere; a no-op off glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


PARSE_LIMIT = 8 << 20  # JSON text above this is recognised from its head and parsed once, by its ingester
HEAD = 256 << 10


def recognise_trace_file(path: Path) -> tuple[bytes, str]:
    """(decompressed bytes, format) of a trace file (see :func:`detect_format`); ValueError with
    the reason if it is unreadable or of no known format. A small file is parsed whole here; a big
    one (a 25 MB kineto trace) is recognised from its head, and its ingester parses it, once."""
    try:
        data = kineto.decompressed(Path(path).read_bytes())
        if len(data) > PARSE_LIMIT:
            return data, detect_format_of_head(data[:HEAD])
        return data, detect_format(kineto.parse_json(data))
    except (OSError, EOFError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        if reason.startswith("not an ONNX Runtime profile"):
            raise
        raise ValueError(f"not a readable JSON trace ({reason})") from None


def detect_format_of_head(head: bytes) -> str:
    """:func:`detect_format` from the first bytes of a big JSON text, by the keys and categories
    each format writes first. Raises ValueError if none."""
    text = head.lstrip()
    compact = text.replace(b" ", b"")
    if text.startswith(b"{"):
        if b'"$schema"' in text and b"speedscope" in text:
            return "speedscope"
        if b'"start_time_absolute"' in text and b'"files"' in text:
            return "scalene"
        if b'"traceEvents"' in text:
            return "pyspy" if b'"cat":"py-spy"' in compact else "torch"
    elif text.startswith(b"["):
        if any(f'"cat":"{cat}"'.encode() in compact for cat in ("Session", "Node", "Kernel")):
            return "ort"
        if b'"cat":"py-spy"' in compact:
            return "pyspy"
    return detect_format(None)


def detect_format(document: object) -> str:
    """What a parsed trace is: ort, torch, pyspy (chrometrace), speedscope or scalene.
    Raises ValueError if none."""
    if isinstance(document, dict):
        if "speedscope" in str(document.get("$schema", "")):
            return "speedscope"
        if "files" in document and "start_time_absolute" in document:
            return "scalene"
        events = document.get("traceEvents")
        if isinstance(events, list):
            if any(isinstance(e, dict) and e.get("cat") == "py-spy" for e in events[:50]):
                return "pyspy"
            return "torch"
    if isinstance(document, list) and document:
        first = next((e for e in document if isinstance(e, dict)), {})
        if first.get("cat") in ("Session", "Node", "Kernel"):
            return "ort"
        if first.get("cat") == "py-spy":
            return "pyspy"
    raise ValueError("not an ONNX Runtime profile, a kineto/torch trace, a py-spy chrometrace or speedscope "
                     "file, or a Scalene profile")
