from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from probes.stages import ClockAnchor, NullRecorder, SpanRecorder, Stage, read_span_file, recorder_from_env


def read_all(directory: Path):
    files = sorted(directory.glob("spans-*.npz"))
    return [read_span_file(f) for f in files]


def test_spans_round_trip_with_request_ids_and_stage_names(tmp_path: Path) -> None:
    recorder = SpanRecorder(tmp_path, capacity=16)
    recorder.record(Stage.DECODE, 100, 250, "req-abc", 7)
    recorder.record(Stage.INFERENCE, 300, 900, None, 7)
    path = recorder.flush()
    assert path is not None and path.exists()
    spans = read_span_file(path)
    assert len(spans) == 2
    assert spans.columns["stage"].tolist() == [Stage.DECODE, Stage.INFERENCE]
    assert spans.columns["end_ns"].tolist() == [250, 900]
    assert spans.columns["batch"].tolist() == [7, 7]
    assert spans.request_ids[spans.columns["request"][0]] == "req-abc"
    assert spans.columns["tid"][0] == threading.get_native_id()
    assert recorder.flush() is None  # nothing pending: no empty file


def test_full_buffer_spills_to_numbered_files_without_losing_spans(tmp_path: Path) -> None:
    recorder = SpanRecorder(tmp_path, capacity=10)
    for i in range(35):
        recorder.record(Stage.PREPROCESS, i, i + 1, f"r{i}", -1)
    recorder.flush()
    files = read_all(tmp_path)
    assert [len(f) for f in files] == [10, 10, 10, 5]
    starts = np.concatenate([f.columns["start_ns"] for f in files])
    assert starts.tolist() == list(range(35))


def test_concurrent_threads_record_every_span_exactly_once(tmp_path: Path) -> None:
    recorder = SpanRecorder(tmp_path, capacity=1000)
    per_thread, threads = 5000, 4

    def work(offset: int) -> None:
        for i in range(per_thread):
            recorder.record(Stage.QUEUE, offset + i, offset + i + 1)

    workers = [threading.Thread(target=work, args=(t * 1_000_000,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    recorder.flush()
    starts = np.concatenate([f.columns["start_ns"] for f in read_all(tmp_path)])
    expected = sorted(t * 1_000_000 + i for t in range(threads) for i in range(per_thread))
    assert sorted(starts.tolist()) == expected


def test_null_recorder_writes_nothing(tmp_path: Path) -> None:
    recorder = NullRecorder()
    recorder.record(Stage.DECODE, 1, 2)
    assert recorder.flush() is None
    assert not list(tmp_path.iterdir())


def test_recorder_from_env_switches_on_only_with_a_directory(tmp_path: Path) -> None:
    assert isinstance(recorder_from_env({}), NullRecorder)
    recorder = recorder_from_env({"PROF_SPANS_DIR": str(tmp_path / "spans"), "PROF_SPANS_CAPACITY": "8"})
    assert isinstance(recorder, SpanRecorder) and recorder.capacity == 8


def test_clock_anchor_maps_monotonic_to_epoch() -> None:
    anchor = ClockAnchor(realtime_ns=1_700_000_000_000_000_000, monotonic_ns=5_000, uncertainty_ns=100)
    assert anchor.to_epoch_ns(6_000) == 1_700_000_000_000_001_000
    taken = ClockAnchor.take()
    assert 0 <= taken.uncertainty_ns < 10_000_000  # a bracket, not a guess
    assert abs(taken.to_epoch_ns(taken.monotonic_ns) - taken.realtime_ns) == 0


def test_span_file_anchors_bracket_the_recording(tmp_path: Path) -> None:
    import time

    recorder = SpanRecorder(tmp_path, capacity=4)
    now = time.perf_counter_ns()
    recorder.record(Stage.SERIALIZE, now, now + 10)
    spans = read_span_file(recorder.flush())
    epoch = spans.best_anchor.to_epoch_ns(int(spans.columns["start_ns"][0]))
    assert abs(epoch - time.time_ns()) < 5_000_000_000
    assert len(spans.anchors) == 2


def test_request_ids_from_many_threads_map_back_across_spills(tmp_path: Path) -> None:
    recorder = SpanRecorder(tmp_path, capacity=97)  # spills mid-way through requests

    def work(t: int) -> None:
        for i in range(2000):
            recorder.record(Stage.DECODE, t * 10_000 + i, t * 10_000 + i + 1, f"r{i % 500}-{t}", t)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    recorder.flush()
    seen = []
    for spans in read_all(tmp_path):
        assert len(spans.request_ids) <= 97  # each file carries only its own ids
        for start, code, thread in zip(spans.columns["start_ns"], spans.columns["request"], spans.columns["batch"]):
            seen.append((int(start), str(spans.request_ids[code]), int(thread)))
    assert len(seen) == 8000
    for start, rid, thread in seen:
        assert rid == f"r{(start - thread * 10_000) % 500}-{thread}"


def test_long_request_ids_are_cut(tmp_path: Path) -> None:
    recorder = SpanRecorder(tmp_path, capacity=4)
    recorder.record(Stage.DECODE, 1, 2, "x" * 10_000)
    spans = read_span_file(recorder.flush())
    assert spans.request_ids[0] == "x" * 128


def test_ingested_spans_land_on_the_epoch_clock(tmp_path: Path) -> None:
    import time

    from probes.stages import ingest_span_files

    recorder = SpanRecorder(tmp_path, capacity=8)
    before = time.time_ns()
    t0 = time.perf_counter_ns()
    recorder.record(Stage.DECODE, t0, t0 + 2_000_000, "req-1", 3)
    recorder.record(Stage.INFERENCE, t0 + 2_000_000, t0 + 5_000_000, None, 3)
    events = ingest_span_files([recorder.flush()])
    assert events["name"].tolist() == ["decode", "inference"] and events["stage"].tolist() == ["decode", "inference"]
    assert events["request_id"].tolist()[0] == "req-1" and events["request_id"].isna().tolist()[1]
    assert events["dur_ns"].tolist() == [2_000_000, 3_000_000] and events["batch_id"].tolist() == [3, 3]
    assert abs(int(events["ts_ns"].iloc[0]) - before) < 2_000_000
