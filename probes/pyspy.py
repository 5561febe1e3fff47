"""py-spy: sample a running Python process's stacks from outside (ptrace), and read them back.

``py-spy record --format chrometrace`` writes, per thread, B/E events whose ``ts`` is µs since
py-spy started; consecutive identical samples are merged, so each B/E run is a stretch of time
during which the thread's stack did not change. We anchor that clock at launch (a bracketed
(realtime, monotonic) pair taken just before spawning py-spy) and turn each stretch into one
``sample`` event: ``dur_ns`` is the stretch, ``value`` the number of samples it stands for,
``stack_id`` the stack in the session's stack table, ``name`` the leaf function.

py-spy's ``tid`` is the pthread identifier, not the OS thread id; ``py-spy dump --json``
snapshots (taken at start and stop) map one to the other. Meanwhile :mod:`probes.gil_snapshots`
dumps the target a few times a second to see who holds the GIL and who waits for it, and
:mod:`probes.gc_watch` samples its native stacks slowly to see the garbage collector.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from probes.protocol import ProbeUnavailable, Target
from probes.gc_watch import RATE_HZ as GC_WATCH_HZ
from probes.gc_watch import GcWatch, finish_recording, ingest_watch
from probes.gil_snapshots import SNAPSHOT_FILE, GilSnapshotter, ingest_snapshots
from profiler.clock import ClockAnchor
from profiler.timeline import StackTable, make_events, merge_events

SOURCE = "pyspy"
TRACE_FILE = "pyspy-{pid}.json"
META_FILE = "pyspy-{pid}.meta.json"
DUMP_FILE = "pyspy-{pid}-dump-{label}.json"


class PySpyError(RuntimeError):
    """py-spy cannot sample the target; the message says why and what to do."""


@dataclass(frozen=True)
class PySpyOptions:
    """``idle`` says whether idle stacks are wanted in the analysis; the recording always
    includes them, because chrometrace merges a stack across the gap of unsampled idle time
    (a loop, a sleep, the same loop again reads as one long stretch) unless idle samples
    mark the gap."""

    rate: int = 100
    idle: bool = False
    gil: bool = False
    native: bool = False
    subprocesses: bool = False
    nonblocking: bool = True
    snapshot_hz: float = 2.0  # GIL snapshots (``py-spy dump``) per second beside the recording; 0: none
    gc_watch_hz: int = GC_WATCH_HZ  # native samples per second of the gc watch (probes.gc_watch); 0: none

    def flags(self) -> list[str]:
        flags = ["--rate", str(self.rate), "--idle"]
        for name in ("gil", "native", "subprocesses", "nonblocking"):
            if getattr(self, name):
                flags.append(f"--{name}")
        return flags


def pyspy_binary() -> str:
    candidates = [Path(sys.executable).parent / "py-spy", shutil.which("py-spy")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise PySpyError("py-spy is not installed (pip install py-spy)")


def explain_failure(pid: int, output: str) -> str:
    """Turn py-spy's complaint into one line with the remedy."""
    lowered = output.lower()
    if "permission denied" in lowered or "operation not permitted" in lowered or "ptrace" in lowered:
        return (f"py-spy may not trace pid {pid} (ptrace denied): run as root, or allow it with "
                "'sudo sysctl kernel.yama.ptrace_scope=0' or CAP_SYS_PTRACE")
    if "no such process" in lowered or not _alive(pid):
        return f"pid {pid} does not exist (or exited)"
    if "python" in lowered and ("failed to find" in lowered or "not a python" in lowered
                                or "interpreter" in lowered):
        return f"pid {pid} is not a Python process py-spy can read"
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return f"py-spy failed on pid {pid}: {last}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dump_threads(pid: int, timeout_s: float = 20.0) -> list[dict]:
    """``py-spy dump --json``: one dict per thread (ids, name, GIL and idle state, frames)."""
    try:
        result = subprocess.run([pyspy_binary(), "dump", "--pid", str(pid), "--json"], capture_output=True,
                                text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise PySpyError(f"py-spy dump of pid {pid} did not answer in {timeout_s:.0f} s") from None
    if result.returncode != 0:
        raise PySpyError(explain_failure(pid, result.stderr + result.stdout))
    try:
        threads = json.loads(result.stdout)
    except ValueError:
        raise PySpyError(f"py-spy dump of pid {pid} printed no JSON") from None
    return threads if isinstance(threads, list) else []


@dataclass
class PySpyRecorder:
    """One ``py-spy record`` child against ``pid``, writing into ``out_dir``."""

    pid: int
    out_dir: Path
    options: PySpyOptions = field(default_factory=PySpyOptions)
    process: subprocess.Popen | None = None
    anchor: ClockAnchor | None = None
    snapshots: GilSnapshotter | None = None
    gc_watch: GcWatch | None = None

    @property
    def trace_path(self) -> Path:
        return self.out_dir / TRACE_FILE.format(pid=self.pid)

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._save_dump("start")
        command = [pyspy_binary(), "record", "--pid", str(self.pid), "--format", "chrometrace",
                   "--output", str(self.trace_path), *self.options.flags()]
        log = open(self.out_dir / f"pyspy-{self.pid}.log", "wb")
        # py-spy's clock starts as it begins running, between these two readings: use the
        # midpoint, with half the gap as the uncertainty.
        before = ClockAnchor.take()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        after = ClockAnchor.take()
        log.close()
        half_gap = (after.realtime_ns - before.realtime_ns) // 2
        self.anchor = ClockAnchor(before.realtime_ns + half_gap, before.monotonic_ns + half_gap,
                                  half_gap + max(before.uncertainty_ns, after.uncertainty_ns))
        meta = {"pid": self.pid, "anchor": self.anchor.to_dict(), "options": asdict(self.options),
                "command": command}
        (self.out_dir / META_FILE.format(pid=self.pid)).write_text(json.dumps(meta))
        time.sleep(0.2)
        if self.process.poll() is not None:
            output = (self.out_dir / f"pyspy-{self.pid}.log").read_text(errors="replace")
            raise PySpyError(explain_failure(self.pid, output))
        if self.options.snapshot_hz > 0:
            self.snapshots = GilSnapshotter(command[0], self.pid, self.out_dir, 1.0 / self.options.snapshot_hz,
                                            self.options.subprocesses)
            self.snapshots.start()
        if self.options.gc_watch_hz > 0:
            self.gc_watch = GcWatch(command[0], self.pid, self.out_dir, self.options.gc_watch_hz,
                                    self.options.subprocesses)
            self.gc_watch.start()

    def _save_dump(self, label: str) -> None:
        threads = dump_threads(self.pid)
        (self.out_dir / DUMP_FILE.format(pid=self.pid, label=label)).write_text(json.dumps(threads))

    def stop(self, timeout_s: float = 30.0) -> Path | None:
        """Ask py-spy to finish (SIGINT makes it write its output); return the trace if any."""
        if self.snapshots is not None:
            self.snapshots.stop()
        if self.gc_watch is not None:
            self.gc_watch.stop()
        if self.process is None:
            return None
        try:
            self._save_dump("stop")
        except PySpyError:
            pass  # the target may have exited; the start dump still maps its threads
        finish_recording(self.process, timeout_s)
        return self.trace_path if self.trace_path.is_file() else None


@dataclass
class PySpyProbe:
    """The ``pyspy`` probe (:class:`probes.protocol.Probe`): the recorder and its GIL snapshots."""

    recorder: PySpyRecorder

    @classmethod
    def for_target(cls, target: Target) -> PySpyProbe:
        return cls(PySpyRecorder(target.pid, target.raw_dir("pyspy"), target.pyspy))

    def start(self) -> dict:
        try:
            self.recorder.start()
        except PySpyError as exc:
            self.recorder.stop()
            raise ProbeUnavailable(str(exc)) from None
        return {"rate_hz": self.recorder.options.rate, "flags": self.recorder.options.flags()}

    def stop(self) -> tuple[dict, list[str]]:
        try:
            if self.recorder.stop() is None:
                return {}, ["py-spy wrote no trace (the target may have exited before it could)"]
        except Exception as exc:  # never leave a py-spy child behind for a reporting problem
            return {}, [f"py-spy: {exc}"]
        return {}, []


def thread_map(out_dir: Path, pid: int) -> dict[int, dict]:
    """pthread ident -> {os_tid, name, owns_gil, active} from the saved dumps (latest wins)."""
    mapping: dict[int, dict] = {}
    for label in ("start", "stop"):
        path = out_dir / DUMP_FILE.format(pid=pid, label=label)
        if not path.is_file():
            continue
        try:
            threads = json.loads(path.read_text())
        except ValueError:
            continue
        for thread in threads:
            mapping[int(thread["thread_id"])] = {"os_tid": thread.get("os_thread_id"),
                                                 "name": thread.get("thread_name"),
                                                 "owns_gil": thread.get("owns_gil"), "active": thread.get("active")}
    return mapping


def thread_names(out_dir: Path) -> dict[int, str]:
    """OS thread id -> the thread's Python name ("MainThread", "ThreadPoolExecutor-0_1"), from
    every target's saved dumps in ``out_dir``; threads without a name are left out."""
    out_dir = Path(out_dir)
    names: dict[int, str] = {}
    for meta in sorted(out_dir.glob("pyspy-*.meta.json")):
        try:
            pid = int(json.loads(meta.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for info in thread_map(out_dir, pid).values():
            if info.get("os_tid") is not None and info.get("name"):
                names[int(info["os_tid"])] = str(info["name"])
    return names


def ingest_pyspy_chrometrace(path: Path, anchor_epoch_ns: int, rate: int, stacks: StackTable,
                             threads: dict[int, dict] | None = None) -> pd.DataFrame:
    """Stretches of unchanged stacks as ``sample`` events (see module doc)."""
    try:
        events = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PySpyError(f"{path}: not a readable py-spy chrometrace ({exc})") from None
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    threads = threads or {}
    open_stacks: dict[int, list[tuple[str, str, int]]] = {}
    last_ts: dict[int, int] = {}
    ts, dur, tids, pids, leaf_ids = [], [], [], [], []
    for event in events:
        phase = event.get("ph")
        if phase not in ("B", "E"):
            continue
        tid, now = int(event["tid"]), int(round(float(event["ts"]) * 1000))
        stack = open_stacks.setdefault(tid, [])
        if stack and now > last_ts[tid]:
            ts.append(last_ts[tid])
            dur.append(now - last_ts[tid])
            tids.append(tid)
            pids.append(int(event.get("pid", -1)))
            leaf_ids.append(stacks.intern(stack))
        last_ts[tid] = now
        if phase == "B":
            args = event.get("args") or {}
            stack.append((str(event.get("name", "?")), str(args.get("filename", "?")), int(args.get("line", 0))))
        elif stack:
            stack.pop()
    ts_ns = np.asarray(ts, dtype=np.int64) + anchor_epoch_ns
    dur_ns = np.asarray(dur, dtype=np.int64)
    os_tids = [threads.get(t, {}).get("os_tid") or t for t in tids]
    names = [stacks.functions[stacks.node_frames[leaf]] for leaf in leaf_ids]
    return make_events(ts_ns=ts_ns, source=SOURCE, kind="sample", name=names, dur_ns=dur_ns, pid=pids,
                       tid=np.asarray(os_tids, dtype=np.int64), stack_id=leaf_ids,
                       value=dur_ns * (rate / 1e9))


def ingest_recording(out_dir: Path, pid: int, stacks: StackTable) -> pd.DataFrame:
    """Read what a :class:`PySpyRecorder` left in ``out_dir``."""
    meta = json.loads((out_dir / META_FILE.format(pid=pid)).read_text())
    anchor = ClockAnchor.from_dict(meta["anchor"])
    samples = ingest_pyspy_chrometrace(out_dir / TRACE_FILE.format(pid=pid), anchor.realtime_ns,
                                       int(meta["options"]["rate"]), stacks, thread_map(out_dir, pid))
    snapshots = out_dir / SNAPSHOT_FILE.format(pid=pid)
    threads = thread_map(out_dir, pid)
    parts = [samples, ingest_watch(out_dir, pid, stacks, lambda path, anchor_ns, rate, native: ingest_pyspy_chrometrace(
        path, anchor_ns, rate, native, threads))]
    if snapshots.is_file():
        parts.append(ingest_snapshots(snapshots, pid, stacks))
    return merge_events(parts)


_SPEEDSCOPE_UNITS = {"nanoseconds": 1, "microseconds": 1_000, "milliseconds": 1_000_000, "seconds": 1_000_000_000,
                     "none": 1}


def ingest_speedscope(path: Path, stacks: StackTable) -> pd.DataFrame:
    """A speedscope file (py-spy's ``--format speedscope``, or ours): sampled profiles become
    consecutive ``sample`` stretches. speedscope keeps no wall-clock times, so samples start
    at the profile's ``startEpochNs`` when present (our export writes it), else at zero."""
    try:
        document = json.loads(Path(path).read_text())
        shared = document["shared"]["frames"]
        profiles = document["profiles"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PySpyError(f"{path}: not a speedscope file ({exc})") from None
    frames = []
    for lane, profile in enumerate(profiles):
        if profile.get("type") != "sampled":
            continue
        scale = _SPEEDSCOPE_UNITS.get(str(profile.get("unit", "none")), 1)
        weights = np.asarray(profile.get("weights") or [1] * len(profile["samples"]), dtype=np.float64) * scale
        durations = np.maximum(np.round(weights).astype(np.int64), 1)
        start = int(profile.get("startEpochNs", 0))
        ts = start + np.concatenate([[0], np.cumsum(durations)[:-1]]) if len(durations) else np.zeros(0, np.int64)
        leaves = [stacks.intern((str(shared[i]["name"]), str(shared[i].get("file", "?")), int(shared[i].get("line") or 0))
                                for i in sample) for sample in profile["samples"]]
        names = [stacks.functions[stacks.node_frames[leaf]] if leaf >= 0 else "<empty>" for leaf in leaves]
        frames.append(make_events(ts_ns=ts, source=SOURCE, kind="sample", name=names, dur_ns=durations,
                                  tid=lane, stack_id=leaves, value=np.ones(len(leaves))))
    return merge_events(frames)
