"""The session directory: what one profiling run leaves behind, and how it is read back.

::

    SESSION/
      meta.json          host, versions, command, targets, probes (on/off and why), clock anchors
      raw/<probe>/...    each probe's artifact exactly as its tool wrote it
      timeline.parquet   the merged events (profiler.timeline schema)
      stack_frames.parquet, stack_nodes.parquet   the stack table of sampled stacks

Every file is written to a temporary name and renamed, so a run interrupted at any point
leaves only whole files; :func:`load` returns whatever the directory holds, with notes on
what is missing. Paths given by probes are checked to stay inside the session directory.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from profiler.atomic import atomic_path, atomic_write_bytes
from profiler.clock import ClockAnchor, best_anchor, drift_ns
from profiler.session_files import FORMAT_VERSION, META, RAW, STACK_FRAMES, STACK_NODES, TIMELINE
from profiler.timeline import StackTable, empty_events, validate



class SessionError(RuntimeError):
    pass


ROW_GROUP = 1 << 18


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        # Written in row groups of a quarter million rows, so the writer never buffers a whole
        # million-event table in compressed form on top of the frame itself.
        # Each row group is converted to Arrow on its own, so at most one group's Arrow copy
        # (codes, converted columns) exists beside the frame.
        categorical = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
        schema = pa.Schema.from_pandas(frame.iloc[:0], preserve_index=False)
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=categorical) as writer:
            for start in range(0, max(len(frame), 1), ROW_GROUP):
                writer.write_table(pa.Table.from_pandas(frame.iloc[start:start + ROW_GROUP], schema=schema,
                                                        preserve_index=False))


def safe_child(base: Path, *parts: str) -> Path:
    """``base/parts...``, refusing anything (.., absolute paths, links) that leaves ``base``."""
    base = base.resolve()
    candidate = base.joinpath(*parts).resolve()
    if candidate != base and base not in candidate.parents:
        raise SessionError(f"path {'/'.join(parts)!r} escapes the session directory {base}")
    return candidate


def host_facts() -> dict[str, Any]:
    versions = {"python": platform.python_version()}
    for module in ("torch", "onnxruntime", "numpy", "pandas"):
        mod = sys.modules.get(module)
        if mod is not None:
            versions[module] = getattr(mod, "__version__", "?")
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "cores": os.cpu_count(), "versions": versions}


@dataclass
class Session:
    path: Path
    meta: dict[str, Any]
    timeline: pd.DataFrame = field(default_factory=empty_events)
    stacks: StackTable = field(default_factory=StackTable)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, path: Path | str, command: list[str] | None = None, targets: list[int] | None = None) -> Session:
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / RAW).mkdir(exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SessionError(f"cannot write the session directory {path}: {exc.strerror or exc}") from None
        meta = {"format": FORMAT_VERSION, "created_ns": time.time_ns(), "host": host_facts(),
                "command": command or [], "targets": targets or [], "probes": {},
                "clock": {"anchors": [ClockAnchor.take().to_dict()]}, "notes": []}
        session = cls(path, meta)
        session.save_meta()
        return session

    # -- writing -------------------------------------------------------------------------

    def raw_dir(self, probe: str) -> Path:
        directory = safe_child(self.path, RAW, probe)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def set_probe(self, name: str, status: str, reason: str | None = None, **details: Any) -> None:
        self.meta["probes"][name] = {"status": status, **({"reason": reason} if reason else {}), **details}
        self.save_meta()

    def add_note(self, note: str) -> None:
        self.meta.setdefault("notes", []).append(note)
        self.save_meta()

    def anchor_clock(self) -> ClockAnchor:
        anchor = ClockAnchor.take()
        self.meta["clock"]["anchors"].append(anchor.to_dict())
        anchors = self.anchors
        self.meta["clock"]["uncertainty_ns"] = best_anchor(anchors).uncertainty_ns
        self.meta["clock"]["drift_ns"] = drift_ns(anchors[0], anchors[-1])
        self.save_meta()
        return anchor

    @property
    def anchors(self) -> list[ClockAnchor]:
        return [ClockAnchor.from_dict(a) for a in self.meta["clock"]["anchors"]]

    def save_meta(self) -> None:
        atomic_write_bytes(self.path / META, json.dumps(self.meta, indent=2, sort_keys=True).encode())

    def save_timeline(self, events: pd.DataFrame, stacks: StackTable | None = None) -> None:
        validate(events)
        self.timeline = events
        if stacks is not None:
            self.stacks = stacks
            frames, nodes = stacks.to_frames()
            atomic_write_parquet(frames, self.path / STACK_FRAMES)
            atomic_write_parquet(nodes, self.path / STACK_NODES)
        atomic_write_parquet(events, self.path / TIMELINE)


def load(path: Path | str, rebuild: bool = True) -> Session:
    """Open a session directory, with whatever it holds.

    A missing timeline (a run stopped before merging) is rebuilt in memory from the raw
    artifacts when ``rebuild`` (the default), else left empty; either way a note says so.
    A directory without ``meta.json`` is not a session.
    """
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise SessionError(f"{path} is not a prof session (no {META})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise SessionError(f"{meta_path}: unreadable session metadata ({exc})") from None
    session = Session(path, meta)
    timeline_path = path / TIMELINE
    if timeline_path.is_file():
        session.timeline = pd.read_parquet(timeline_path)
    elif rebuild and any((path / RAW).glob("*/*")):
        # Interrupted before merging: build the timeline from what the probes left, in memory.
        from profiler.ingest import ingest_raw

        session.timeline, session.stacks, warnings = ingest_raw(path / RAW)
        session.notes.append("timeline rebuilt from raw artifacts (the run stopped before merging)")
        session.notes.extend(warnings)
        return session
    else:
        session.notes.append("no merged timeline in this session (interrupted before merging)")
    if (path / STACK_FRAMES).is_file() and (path / STACK_NODES).is_file():
        session.stacks = StackTable.from_frames(pd.read_parquet(path / STACK_FRAMES),
                                                pd.read_parquet(path / STACK_NODES))
    return session


def build_timeline(session: Session) -> list[str]:
    """Ingest every ``raw/<probe>`` of the session, merge, save. Returns the warnings. The
    profiled threads' Python names (from py-spy's dumps) go into the session's metadata, so no
    reader of the session opens ``raw/`` for them."""
    from profiler.ingest import ingest_raw  # probes' readers: only when a timeline is built

    events, stacks, warnings = ingest_raw(session.path / "raw")
    session.save_timeline(events, stacks)
    from probes.pyspy import thread_names

    names = thread_names(session.path / "raw" / "pyspy")
    if names:
        session.meta["thread_names"] = {str(tid): name for tid, name in sorted(names.items())}
        session.save_meta()
    for warning in warnings:
        session.add_note(warning)
    return warnings


def import_files(paths: list[Path], session: Session) -> tuple[list[Path], list[str]]:
    """Copy recognised trace files into the session's raw dirs; return (imported, errors).

    Copies get fresh names (``imported-N-<name>``) so files with the same name, or a second
    import into the same session, never overwrite each other. Each file is read once and
    stored decompressed, which is how the ingesters read them.
    """
    from profiler.ingest import recognise_trace_file

    imported, errors = [], []
    for path in paths:
        try:
            data, probe = recognise_trace_file(path)
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
            continue
        suffix = ".json"
        if probe == "speedscope":
            probe, suffix = "pyspy", ".speedscope.json"
        directory = session.raw_dir(probe)
        stem = path.name.removesuffix(".gz").removesuffix(".json")
        n = len(list(directory.glob("imported-*")))
        target = safe_child(directory, f"imported-{n}-{stem}{suffix}")
        target.write_bytes(data)  # stored decompressed, as read
        imported.append(target)
    return imported, errors
