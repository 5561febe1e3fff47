"""GIL snapshots: ``py-spy dump --json --nonblocking`` a few times a second while py-spy records.

A sampled stack says what a thread wants to do, not whether it can: a thread queued on the
GIL shows the same Python stack as the one running it. A dump says more, per thread: whether it
holds the GIL (``owns_gil``) and whether the OS has it running (``active``). A thread that is
not running, holds no GIL and whose stack is in the middle of work (not in a wait, a select or
a socket read, which the stage attribution calls idle or I/O) is waiting for the GIL. Taken
every half second, these snapshots measure how often the GIL is held, by which stage's work,
and how many threads queue behind it.

``--nonblocking`` reads the target's memory without pausing it; each dump costs py-spy
~13 ms of CPU (measured on the 2-core development machine: 2 Hz added 1.3 % of the machine, with no
measurable change in throughput; benchmarks/results/overhead.md).

The garbage collector, which Python frames cannot show, is :mod:`probes.gc_watch`'s business
(native dumps here, one py-spy process each, re-read every native library's symbols each time:
a fifth of the sample server's throughput at one a second).
Each snapshot is one JSON line in ``pyspy-{pid}-snapshots.jsonl`` ({"ts_ns": …, "threads":
[…]}), written and flushed as it is taken, so an interrupted run keeps every snapshot so far.

Ingested as ``instant`` events of source ``pyspy``, one per thread and snapshot: ``name``
``holds-gil``, ``active`` (running without the GIL: native code that released it) or
``inactive``; ``stack_id`` the thread's stack; ``tid`` its OS thread id.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from profiler.timeline import StackTable, empty_events, make_events

SNAPSHOT_FILE = "pyspy-{pid}-snapshots.jsonl"
SOURCE = "pyspy"
STATES = ("holds-gil", "active", "inactive")
_MAX_FAILURES = 3  # in a row: the target has exited, or py-spy cannot read it any more


class GilSnapshotter:
    """A thread that dumps ``pid`` every ``interval_s`` into ``out_dir`` until stopped."""

    def __init__(self, binary: str, pid: int, out_dir: Path, interval_s: float = 0.5,
                 subprocesses: bool = False) -> None:
        # one dump per process: ``dump --json --subprocesses`` (py-spy 0.4.3) prints the parent's
        # threads only, and each worker process has a GIL of its own
        self.binary, self.pid, self.subprocesses = binary, pid, subprocesses
        self.command = [binary, "dump", "--pid", str(pid), "--json", "--nonblocking"]
        self.path = Path(out_dir) / SNAPSHOT_FILE.format(pid=pid)
        self.interval_s = interval_s
        self.taken = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prof-gil-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        failures = 0
        with open(self.path, "a", encoding="utf-8") as out:
            while not self._stop.is_set() and failures < _MAX_FAILURES:
                began = time.monotonic()
                snapshots = [self._take(pid) for pid in self._processes()]
                snapshot = snapshots[0]  # the target itself
                if snapshot is None:
                    failures += 1
                    self.failed += 1
                else:
                    failures = 0
                    for each in snapshots:
                        if each is not None:  # a line per process: its own GIL, its own moment
                            out.write(json.dumps(each, separators=(",", ":")) + "\n")
                    out.flush()
                    self.taken += 1
                self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def _processes(self) -> list[int]:
        """The target, then (with ``subprocesses``) its child processes, re-read every tenth snapshot."""
        if not self.subprocesses:
            return [self.pid]
        if self.taken % 10 == 0 or not hasattr(self, "_children"):
            try:
                self._children = [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
            except psutil.Error:
                self._children = []
        return [self.pid, *self._children]

    def _take(self, pid: int | None = None) -> dict | None:
        before = time.time_ns()
        command = self.command if pid in (None, self.pid) else [*self.command[:3], str(pid), *self.command[4:]]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=5.0)
        except (OSError, subprocess.TimeoutExpired):
            return None
        after = time.time_ns()
        if result.returncode != 0:
            return None
        try:
            threads = json.loads(result.stdout)
        except ValueError:
            return None
        if not isinstance(threads, list):
            return None
        kept = [{"os_tid": t.get("os_thread_id"), "name": t.get("thread_name"), "gil": bool(t.get("owns_gil")),
                 "active": bool(t.get("active")), "frames": [[f.get("name", "?"), f.get("filename", "?"), int(f.get("line") or 0)] for f in t.get("frames") or []]}
                for t in threads if isinstance(t, dict)]
        return {"ts_ns": (before + after) // 2, "threads": kept}


def ingest_snapshots(path: Path, pid: int, stacks: StackTable) -> pd.DataFrame:
    """The snapshots of one file as ``instant`` events (see module doc). A torn last line
    (the run was killed mid-write) is skipped; every complete one is kept."""
    ts, tids, names, leaves = [], [], [], []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                snapshot = json.loads(line)
                when, threads = int(snapshot["ts_ns"]), snapshot["threads"]
            except (ValueError, KeyError, TypeError):
                continue
            for thread in threads:
                frames = [(str(n), str(f), int(line_no)) for n, f, line_no in reversed(thread.get("frames") or [])]
                ts.append(when)
                tids.append(int(thread["os_tid"]) if thread.get("os_tid") is not None else -1)
                names.append(STATES[0] if thread.get("gil") else STATES[1] if thread.get("active") else STATES[2])
                leaves.append(stacks.intern(frames) if frames else -1)
    if not ts:
        return empty_events()
    return make_events(ts_ns=ts, source=SOURCE, kind="instant", name=names, pid=pid, tid=tids, stack_id=leaves)
