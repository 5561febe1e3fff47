"""Real py-spy attached to real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from probes.pyspy import PySpyError, PySpyOptions, PySpyRecorder, dump_threads, ingest_recording, thread_names
from profiler.timeline import StackTable

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

TARGET = textwrap.dedent("""
    import json, os, sys, threading, time

    def busy_loop(until):
        while time.time() < until:
            pass

    def idle_worker():
        time.sleep(60)

    threading.Thread(target=idle_worker, name="sleeper", daemon=True).start()
    while not os.path.exists(sys.argv[2]):  # the test says go once py-spy records
        time.sleep(0.01)
    spans = []
    for _ in range(4):
        start = time.time_ns()
        busy_loop(time.time() + 0.15)
        spans.append((start, time.time_ns()))
        time.sleep(0.1)
    json.dump(spans, open(sys.argv[1], "w"))
""")


@pytest.fixture()
def target(tmp_path: Path):
    script = tmp_path / "target.py"
    script.write_text(TARGET)
    spans = tmp_path / "spans.json"
    go = tmp_path / "go"
    process = subprocess.Popen([sys.executable, str(script), str(spans), str(go)])
    time.sleep(0.3)
    process.go = go
    yield process, spans
    process.kill()
    process.wait()


def test_samples_of_a_busy_loop_fall_inside_its_span(target, tmp_path: Path) -> None:
    process, spans_file = target
    recorder = PySpyRecorder(process.pid, tmp_path / "raw", PySpyOptions(rate=250))
    recorder.start()
    time.sleep(0.3)
    process.go.write_text("")
    process.wait(30)
    assert recorder.stop() is not None
    stacks = StackTable()
    events = ingest_recording(tmp_path / "raw", process.pid, stacks)
    spans = json.loads(spans_file.read_text())
    busy = events[events["name"] == "busy_loop"]
    assert len(busy) >= 4
    # A stretch starts at the first sample that saw the loop: it must lie inside a loop's span
    # (within the launch anchor's few ms). It ends at the first sample that did not, which a
    # loaded machine may delay, so its end may trail the span by more.
    anchor_ms, trailing_ms = 15, 60
    for ts, dur in zip(busy["ts_ns"], busy["dur_ns"]):
        owner = [(start, end) for start, end in spans if start - anchor_ms * 10**6 <= ts <= end]
        assert owner, f"stretch at {ts} starts outside every busy-loop span"
        assert ts + dur <= owner[0][1] + trailing_ms * 10**6, f"stretch at {ts} outlives its span"
    covered = busy["dur_ns"].sum() / sum(end - start for start, end in spans)
    assert 0.7 < covered < 1.3
    frames = stacks.frames_of(int(busy["stack_id"].iloc[0]))
    assert frames[-1][0] == "busy_loop" and frames[-1][1].endswith("target.py")
    assert (busy["tid"] == process.pid).all()  # the main thread's OS tid, mapped from the pthread id
    assert busy["value"].sum() == pytest.approx(busy["dur_ns"].sum() * 250 / 1e9)
    # The viewer labels lanes by the threads' Python names, keyed like the samples' tid.
    names = thread_names(tmp_path / "raw")
    assert names[process.pid] == "MainThread"
    threads = set(events.loc[events["tid"] >= 0, "tid"])  # tid -1: the gc watch's process-wide coverage
    assert "sleeper" in names.values() and threads <= set(names)


SPINNERS = textwrap.dedent("""
    import threading, time

    def spin(until):
        total = 0
        while time.time() < until:
            total += 1

    until = time.time() + 30
    for n in range(3):
        threading.Thread(target=spin, args=(until,), name=f"spinner-{n}").start()
""")


def test_gil_snapshots_show_one_holder_and_threads_waiting_behind_it(tmp_path: Path) -> None:
    script = tmp_path / "spinners.py"
    script.write_text(SPINNERS)
    process = subprocess.Popen([sys.executable, str(script)])
    try:
        time.sleep(0.5)
        recorder = PySpyRecorder(process.pid, tmp_path / "raw", PySpyOptions(rate=50, snapshot_hz=10))
        recorder.start()
        time.sleep(2.0)
        assert recorder.stop() is not None
    finally:
        process.kill()
        process.wait()
    assert recorder.snapshots is not None and recorder.snapshots.taken >= 5
    stacks = StackTable()
    events = ingest_recording(tmp_path / "raw", process.pid, stacks)
    snapshots = events[events["kind"] == "instant"]
    per_snapshot = snapshots.groupby("ts_ns")
    assert per_snapshot.ngroups == recorder.snapshots.taken
    holders = snapshots[snapshots["name"] == "holds-gil"]
    assert per_snapshot["name"].apply(lambda names: (names == "holds-gil").sum()).max() <= 1  # one GIL
    assert holders["ts_ns"].nunique() >= 0.5 * per_snapshot.ngroups
    # three pure-Python spinners: while one holds the GIL the others sleep on it, stacks mid-work
    waiting = snapshots[(snapshots["name"] == "inactive") & (snapshots["stack_id"] >= 0)]
    leaves = [stacks.frames_of(int(s))[-1][0] for s in waiting["stack_id"]]
    assert leaves.count("spin") >= per_snapshot.ngroups  # at least one spinner queued per snapshot
    assert set(holders["tid"]) <= set(events.loc[events["kind"] == "sample", "tid"])  # the same OS tids


def test_dump_maps_pthread_ids_to_os_threads(target) -> None:
    process, _ = target
    threads = dump_threads(process.pid)
    names = {t["thread_name"] for t in threads}
    assert "sleeper" in names
    assert all(isinstance(t["os_thread_id"], int) for t in threads)


def test_dead_pid_is_one_clear_error(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with pytest.raises(PySpyError, match=f"pid {process.pid} does not exist"):
        PySpyRecorder(process.pid, tmp_path).start()


def test_non_python_process_is_one_clear_error(tmp_path: Path) -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(PySpyError, match=f"pid {process.pid}"):
            dump_threads(process.pid)
    finally:
        process.kill()
        process.wait()


COLLECTOR = textwrap.dedent("""
    import gc, sys, time
    keep = [[{"n": [i]} for i in range(100)] for _ in range(3000)]  # a large long-lived heap
    if sys.argv[1] == "freeze":
        gc.freeze()  # out of every collection: collections find next to nothing to scan
    until = time.time() + 30
    while time.time() < until:
        for _ in range(500):
            cycle = []
            cycle.append(cycle)  # garbage that only the collector frees
        gc.collect(2) if sys.argv[1] == "collect" else time.sleep(0.001)
""")


@pytest.mark.parametrize("mode", ["collect", "freeze"])
def test_the_gc_watch_sees_the_collector_in_native_frames(tmp_path: Path, mode: str) -> None:
    """A slow native recorder beside the main one: full collections over a large heap are seen
    as ``<gc>`` stretches on the Python line that set them off; a frozen heap that is never
    collected explicitly shows (next to) none."""
    from profiler.measures import Measures

    script = tmp_path / "collector.py"
    script.write_text(COLLECTOR)
    process = subprocess.Popen([sys.executable, str(script), mode])
    try:
        time.sleep(1.0)
        recorder = PySpyRecorder(process.pid, tmp_path / "raw", PySpyOptions(rate=20, snapshot_hz=0, gc_watch_hz=20))
        recorder.start()
        time.sleep(3.0)
        assert recorder.stop() is not None
    finally:
        process.kill()
        process.wait()
    stacks = StackTable()
    events = ingest_recording(tmp_path / "raw", process.pid, stacks)
    spans = events[events["kind"] == "span"]
    (watch,) = spans[spans["name"] == "native-watch"].itertuples()
    assert watch.dur_ns > 2e9 and watch.value > 40  # ~3 s at 20 Hz
    measures = Measures(events, stacks, meta={"host": {"cores": 2}})
    taken, share = measures.gc
    in_gc = spans[spans["name"] == "<gc>"]
    if mode == "collect":
        assert share > 0.3, share  # the loop is mostly full collections of the kept heap
        lines = {stacks.frames_of(int(s))[-2][0] for s in in_gc["stack_id"]}
        assert lines == {"<module>"}  # the Python frame under the collector: the script's loop
    else:
        assert share < 0.1, share


PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, sys.argv[1]])  # a worker process, like gunicorn's
    time.sleep(30)
""")


def test_gil_snapshots_of_a_process_tree_see_every_worker(tmp_path: Path) -> None:
    """A parent that only waits and a worker spinning in Python: with subprocesses each process
    is dumped on its own (py-spy's dump --subprocesses prints the parent only), so the worker's
    threads are in the snapshots — Python threads, with a GIL of their own."""
    (tmp_path / "spinners.py").write_text(SPINNERS)
    (tmp_path / "parent.py").write_text(PARENT)
    process = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path / "spinners.py")])
    try:
        time.sleep(1.0)
        worker = psutil.Process(process.pid).children()[0].pid
        recorder = PySpyRecorder(process.pid, tmp_path / "raw",
                                 PySpyOptions(rate=20, snapshot_hz=5, subprocesses=True, gc_watch_hz=0))
        recorder.start()
        time.sleep(2.0)
        recorder.stop()
    finally:
        for p in psutil.Process(process.pid).children(recursive=True):
            p.kill()
        process.kill()
        process.wait()
    lines = [json.loads(line) for line in (tmp_path / "raw" / f"pyspy-{process.pid}-snapshots.jsonl").open()]
    tids = {t["os_tid"] for line in lines for t in line["threads"]}
    assert process.pid in tids and worker in tids  # the parent's main thread and the worker's
    held = [line for line in lines if any(t["gil"] for t in line["threads"])]
    assert held and all(t["os_tid"] != process.pid for line in held for t in line["threads"] if t["gil"])
