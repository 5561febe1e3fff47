"""The garbage-collector watch: a second, slow ``py-spy record --native`` beside the main one.

Python frames cannot show the cyclic garbage collector: it runs inside whatever allocation
triggered it, under that line's frame. Native frames can (``gc_collect_main`` and its kin).
Native unwinding pauses the target and needs the symbols of every native library it loaded
(torch, ONNX Runtime: hundreds of MB); one ``py-spy dump --native`` per snapshot paid that
symbol read every time (measured: one a second cost ~10 % of the 2-core development machine
and a fifth of the sample server's throughput). One long-lived recorder reads the symbols once
and then pauses the target for one unwind per sample: at :data:`RATE_HZ` it costs well under
1 % (benchmarks/results/overhead.md, row "default").

Only two things are kept of its trace: the window it covered (a ``native-watch`` span per
process) and the stretches in which a thread was inside the collector (``<gc>`` spans, on the
thread's Python stack, so the viewer shows which code's allocations set off the collection;
``value`` the samples they stand for). Everything else of the native trace is dropped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from profiler.timeline import StackTable, empty_events, make_events

ReadTrace = Callable[[Path, int, int, StackTable], pd.DataFrame]
RATE_HZ = 4
TRACE_FILE = "gcwatch-{pid}.json"
META_FILE = "gcwatch-{pid}.meta.json"
WATCH = "native-watch"
GC = "<gc>"
GC_FUNCTIONS = ("gc_collect_main", "gc_collect_region", "gc_collect_generations", "gc_collect_with_callback",
                "collect_with_callback", "_PyGC_Collect", "gc_collect_impl")


class GcWatch:
    """``py-spy record --native --idle --rate R`` on ``pid`` until :meth:`stop`."""

    def __init__(self, binary: str, pid: int, out_dir: Path, rate_hz: int = RATE_HZ,
                 subprocesses: bool = False) -> None:
        self.pid, self.out_dir, self.rate_hz = pid, Path(out_dir), rate_hz
        self.command = [binary, "record", "--pid", str(pid), "--native", "--idle", "--rate", str(rate_hz),
                        "--format", "chrometrace", "--output", str(self.out_dir / TRACE_FILE.format(pid=pid)),
                        *(["--subprocesses"] if subprocesses else [])]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.out_dir / f"gcwatch-{self.pid}.log", "wb")
        before = time.time_ns()
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        after = time.time_ns()
        log.close()
        (self.out_dir / META_FILE.format(pid=self.pid)).write_text(json.dumps(
            {"anchor_ns": (before + after) // 2, "rate_hz": self.rate_hz, "command": self.command}))

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Finish the recording (SIGINT makes py-spy write it); False when it had failed
        (no native unwinding here: the rest of the session goes on without it)."""
        if self.process is None:
            return False
        finish_recording(self.process, timeout_s)
        return (self.out_dir / TRACE_FILE.format(pid=self.pid)).is_file()


def finish_recording(process: subprocess.Popen, timeout_s: float) -> None:
    """End a ``py-spy record`` child: SIGINT makes it write its output; killed if it will not."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _python_frames(stack: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [frame for frame in stack if frame[1].endswith(".py") or frame[1].startswith("<")]


def ingest_watch(out_dir: Path, pid: int, stacks: StackTable, read_trace: ReadTrace) -> pd.DataFrame:
    """The watch's coverage and collector stretches as events (see module doc); empty when the
    watch did not run or left no readable trace (a run killed before py-spy wrote it).
    ``read_trace(path, anchor_ns, rate, stacks)`` reads py-spy's chrometrace into stretches."""
    meta_path, trace = out_dir / META_FILE.format(pid=pid), out_dir / TRACE_FILE.format(pid=pid)
    if not meta_path.is_file() or not trace.is_file():
        return empty_events()
    try:
        meta = json.loads(meta_path.read_text())
        native = StackTable()
        stretches = read_trace(trace, int(meta["anchor_ns"]), int(meta["rate_hz"]), native)
    except (RuntimeError, ValueError, KeyError, OSError):
        return empty_events()
    if stretches.empty:
        return empty_events()
    ts, dur, names, tids, pids, leaves, values, args = [], [], [], [], [], [], [], []
    for process, rows in stretches.groupby("pid", sort=False):
        start, end = int(rows["ts_ns"].min()), int((rows["ts_ns"] + rows["dur_ns"]).max())
        ts.append(start), dur.append(end - start), names.append(WATCH), tids.append(-1), pids.append(int(process))
        leaves.append(-1), values.append(float(meta["rate_hz"]) * (end - start) / 1e9)
        args.append(json.dumps({"rate_hz": int(meta["rate_hz"])}))
    in_gc: dict[int, int | None] = {}
    for row in stretches.itertuples(index=False):
        leaf = int(row.stack_id)
        if leaf not in in_gc:
            frames = native.frames_of(leaf) if leaf >= 0 else []
            hit = any(name.startswith(GC_FUNCTIONS) for name, _, _ in frames)
            in_gc[leaf] = stacks.intern([*_python_frames(frames), (GC, "<native>", 0)]) if hit else None
        if in_gc[leaf] is None:
            continue
        ts.append(int(row.ts_ns)), dur.append(int(row.dur_ns)), names.append(GC), tids.append(int(row.tid))
        pids.append(int(row.pid)), leaves.append(in_gc[leaf]), values.append(float(row.value)), args.append(None)
    return make_events(ts_ns=ts, dur_ns=dur, source="pyspy", kind="span", name=names, pid=pids, tid=tids,
                       stack_id=leaves, value=values, args=args)
