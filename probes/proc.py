"""psutil sampler: CPU, memory, threads, context switches and I/O of a process and its children.

A background thread reads psutil at a fixed interval and appends one JSON line per process
per tick to ``proc-<pid>.jsonl`` (flushed each tick, so an interrupted run keeps what it
saw). Counters psutil reports as running totals (CPU seconds, context switches, I/O bytes)
are stored as totals; the ingest turns them into rates. USS needs ``/proc/PID/smaps`` and is
read less often.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from probes.protocol import ProbeUnavailable, Target
from profiler.timeline import make_events, merge_events

SOURCE = "proc"
FILE = "proc-{pid}.jsonl"


def read_process(process: psutil.Process, with_uss: bool) -> dict:
    with process.oneshot():
        times = process.cpu_times()
        memory = process.memory_info()
        ctx = process.num_ctx_switches()
        row = {"pid": process.pid, "name": process.name(), "cpu_s": times.user + times.system,
               "rss": memory.rss, "threads": process.num_threads(), "ctx_vol": ctx.voluntary,
               "ctx_invol": ctx.involuntary,
               "thread_cpu_s": {t.id: t.user_time + t.system_time for t in process.threads()}}
        waits = _run_delays(process.pid, row["thread_cpu_s"])
        if waits:
            row["thread_wait_s"] = waits
        try:
            io = process.io_counters()
            row["read_bytes"], row["write_bytes"] = io.read_bytes, io.write_bytes
        except (psutil.AccessDenied, AttributeError):
            pass
    if with_uss:
        try:
            row["uss"] = process.memory_full_info().uss
        except psutil.AccessDenied:
            pass
    return row


def host_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (every process, all cores): beside the
    target's own CPU it shows how much other processes took from it."""
    try:
        times = psutil.cpu_times()
    except (OSError, psutil.Error):
        return None
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0)
                 - getattr(times, "guest_nice", 0.0))


def probe_cpu_s(probes: list[psutil.Process]) -> float:
    """CPU seconds so far of prof's probe processes (its children that are not the target:
    py-spy, the wire capture), of the ones already reaped (``py-spy dump``), and of this
    sampler's thread: what profiling itself takes from the machine, which goes when prof does.
    prof's own threads are not counted: ``prof run`` drives its load from them."""
    total = time.thread_time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total += usage.ru_utime + usage.ru_stime
    for child in probes:
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _run_delays(pid: int, tids: dict) -> dict[int, float]:
    """Seconds each thread has waited for a CPU while runnable (Linux schedstat's run delay):
    the direct measure of threads competing for too few cores."""
    waits = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as handle:
                waits[tid] = int(handle.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return waits


@dataclass
class ProcSampler:
    """Samples ``pid`` and its children every ``interval_s`` until :meth:`stop`."""

    pid: int
    out_dir: Path
    interval_s: float = 0.1
    uss_every: int = 10
    family_every: int = 10  # ticks between re-reads of the children (~1.6 ms each)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.out_dir / FILE.format(pid=self.pid)

    def start(self) -> None:
        psutil.Process(self.pid)  # raises NoSuchProcess now rather than in the thread
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="prof-proc-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> Path:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.path

    def _run(self) -> None:
        root = psutil.Process(self.pid)
        tick = 0
        with open(self.path, "a") as out:
            while not self._stop.is_set():
                started = time.perf_counter()
                if tick % self.family_every == 0:  # finding children scans every process: not each tick
                    try:
                        family = [root, *root.children(recursive=True)]
                    except psutil.NoSuchProcess:
                        self.errors.append(f"pid {self.pid} exited")
                        return
                    targets = {p.pid for p in family}
                    try:
                        probes = [c for c in psutil.Process().children(recursive=True) if c.pid not in targets]
                    except psutil.Error:
                        probes = []
                elif not root.is_running():
                    self.errors.append(f"pid {self.pid} exited")
                    return
                now, mono = time.time_ns(), time.monotonic_ns()
                host, profiling = host_busy_s(), probe_cpu_s(probes)
                for process in family:
                    try:
                        row = read_process(process, with_uss=tick % self.uss_every == 0)
                    except (psutil.NoSuchProcess, psutil.ZombieProcess):
                        continue
                    except psutil.Error as exc:  # e.g. AccessDenied on a child: note it, keep sampling
                        self.errors.append(f"pid {process.pid}: {exc}")
                        continue
                    row["t"], row["m"] = now, mono
                    if process is root and host is not None:
                        row["host_cpu_s"], row["probe_cpu_s"] = host, profiling
                    out.write(json.dumps(row, separators=(",", ":")) + "\n")
                out.flush()
                tick += 1
                self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - started)))


def ingest_proc(path: Path | str) -> pd.DataFrame:
    """Counter events: cpu_percent, rss_bytes, uss_bytes, threads, ctx switches/s, I/O bytes/s,
    per-thread cpu_percent and wait_percent (time runnable but waiting for a CPU), with the
    thread's tid, host_cpu_percent (the whole machine's busy CPU, on the target's rows) and
    probe_cpu_percent (what prof's probes took of it: :func:`probe_cpu_s`)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut off by an interruption
    frames = []
    by_pid: dict[int, list[dict]] = {}
    for row in rows:
        by_pid.setdefault(int(row["pid"]), []).append(row)
    for pid, samples in by_pid.items():
        frames.extend(_process_counters(pid, samples))
    if not frames:
        return make_events(ts_ns=[], source=SOURCE, kind="counter", name=[])
    return merge_events(frames)


def _process_counters(pid: int, samples: list[dict]) -> list[pd.DataFrame]:
    t = np.asarray([s["t"] for s in samples], dtype=np.int64)
    # Rates use the monotonic clock (an NTP step of the wall clock must not make them negative).
    mono = np.asarray([s.get("m", s["t"]) for s in samples], dtype=np.int64)
    frames = []

    def counter(name: str, ts: np.ndarray, values: np.ndarray, tid: int = -1) -> None:
        frames.append(make_events(ts_ns=ts, source=SOURCE, kind="counter", name=name, pid=pid, tid=tid,
                                  value=values))

    for key, name in (("rss", "rss_bytes"), ("threads", "threads")):
        counter(name, t, np.asarray([s[key] for s in samples], dtype=np.float64))
    uss = [(s["t"], s["uss"]) for s in samples if "uss" in s]
    if uss:
        counter("uss_bytes", np.asarray([u[0] for u in uss], dtype=np.int64), np.asarray([u[1] for u in uss], float))
    if len(samples) < 2:
        return frames
    dt = np.maximum(np.diff(mono), 1) / 1e9
    host = [(s["t"], s.get("m", s["t"]), s["host_cpu_s"]) for s in samples if "host_cpu_s" in s]
    if len(host) >= 2:
        elapsed = np.maximum(np.diff(np.asarray([h[1] for h in host], dtype=np.int64)), 1) / 1e9
        busy = np.diff(np.asarray([h[2] for h in host], dtype=np.float64))
        counter("host_cpu_percent", np.asarray([h[0] for h in host], dtype=np.int64)[1:], 100.0 * busy / elapsed)
        probes = [(s.get("m", s["t"]), s["probe_cpu_s"]) for s in samples if "probe_cpu_s" in s]
        if len(probes) == len(host):
            spent = np.clip(np.diff(np.asarray([p[1] for p in probes], dtype=np.float64)), 0.0, None)
            counter("probe_cpu_percent", np.asarray([h[0] for h in host], dtype=np.int64)[1:], 100.0 * spent / elapsed)
    for key, name, scale in (("cpu_s", "cpu_percent", 100.0), ("ctx_vol", "ctx_switches_voluntary_per_s", 1.0),
                             ("ctx_invol", "ctx_switches_involuntary_per_s", 1.0),
                             ("read_bytes", "read_bytes_per_s", 1.0), ("write_bytes", "write_bytes_per_s", 1.0)):
        if all(key in s for s in samples):
            totals = np.asarray([s[key] for s in samples], dtype=np.float64)
            counter(name, t[1:], scale * np.diff(totals) / dt)
    for key, name in (("thread_cpu_s", "thread_cpu_percent"), ("thread_wait_s", "thread_wait_percent")):
        for tid in sorted({int(k) for s in samples for k in s.get(key, {})}):
            series = [(s["t"], s.get("m", s["t"]), s.get(key, {}).get(str(tid))) for s in samples]
            series = [x for x in series if x[2] is not None]
            if len(series) >= 2:
                ts = np.asarray([x[0] for x in series], dtype=np.int64)
                elapsed = np.maximum(np.diff(np.asarray([x[1] for x in series], dtype=np.int64)), 1) / 1e9
                values = np.asarray([x[2] for x in series], dtype=np.float64)
                counter(name, ts[1:], 100.0 * np.diff(values) / elapsed, tid)
    return frames


@dataclass
class ProcProbe:
    """The ``proc`` probe (:class:`probes.protocol.Probe`)."""

    sampler: ProcSampler

    @classmethod
    def for_target(cls, target: Target) -> ProcProbe:
        return cls(ProcSampler(target.pid, target.raw_dir("proc"), interval_s=target.interval_s))

    def start(self) -> dict:
        try:
            self.sampler.start()
        except psutil.Error as exc:
            raise ProbeUnavailable(f"psutil: {exc}") from None
        return {"interval_s": self.sampler.interval_s}

    def stop(self) -> tuple[dict, list[str]]:
        self.sampler.stop()
        return {}, [f"proc: {e}" for e in self.sampler.errors]
