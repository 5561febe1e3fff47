from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import profiler
from profiler.clock import ClockAnchor, best_anchor, drift_ns
from profiler.session import Session, SessionError, safe_child
from profiler.timeline import SchemaError, StackTable, make_events, merge_events, validate


def test_make_events_fills_defaults_and_rejects_unknown_columns() -> None:
    events = make_events(ts_ns=[5, 1], source="stages", kind="span", name=["decode", "queue"], dur_ns=[3, 4],
                         stage=["decode", "queue"], request_id=["a", None])
    validate(events)
    assert events["pid"].tolist() == [-1, -1] and events["batch_id"].tolist() == [-1, -1]
    assert events["request_id"].isna().tolist() == [False, True]
    assert np.isnan(events["value"]).all()
    with pytest.raises(SchemaError, match="unknown timeline columns: wrong"):
        make_events(ts_ns=[1], source="x", kind="span", name="n", wrong=[1])
    with pytest.raises(SchemaError, match="negative"):
        make_events(ts_ns=[1], source="x", kind="span", name="n", dur_ns=[-1])


def test_merge_sorts_by_time_and_unions_categories() -> None:
    a = make_events(ts_ns=[10, 30], source="stages", kind="span", name=["decode", "inference"])
    b = make_events(ts_ns=[20], source="ort", kind="span", name=["Conv"])
    merged = merge_events([a, b])
    validate(merged)
    assert merged["ts_ns"].tolist() == [10, 20, 30]
    assert merged["source"].tolist() == ["stages", "ort", "stages"]
    assert set(merged["name"].cat.categories) == {"decode", "inference", "Conv"}


def test_stack_table_stores_shared_prefixes_once_and_round_trips() -> None:
    table = StackTable()
    root = ("main", "app.py", 1)
    leaf_a = table.intern([root, ("handle", "app.py", 10), ("decode", "img.py", 5)])
    leaf_b = table.intern([root, ("handle", "app.py", 10), ("infer", "model.py", 7)])
    assert table.intern([root, ("handle", "app.py", 10), ("decode", "img.py", 5)]) == leaf_a
    assert len(table.parents) == 4  # main, handle, decode, infer
    assert table.frames_of(leaf_b)[-1] == ("infer", "model.py", 7)
    restored = StackTable.from_frames(*table.to_frames())
    assert restored.frames_of(leaf_a) == table.frames_of(leaf_a)
    other = StackTable()
    other_leaf = other.intern([root, ("other", "x.py", 3)])
    mapping = table.merge(other)
    assert table.frames_of(mapping[other_leaf]) == other.frames_of(other_leaf)


def test_clock_bracket_conversions() -> None:
    a = ClockAnchor(realtime_ns=1_000_000, monotonic_ns=400, uncertainty_ns=50)
    b = ClockAnchor(realtime_ns=2_000_100, monotonic_ns=1_000_400, uncertainty_ns=20)
    assert a.to_epoch_ns(500) == 1_000_100 and a.to_monotonic_ns(1_000_100) == 500
    assert best_anchor([a, b]) is b
    assert drift_ns(a, b) == 100


def test_session_saves_and_loads_its_timeline(tmp_path: Path) -> None:
    session = Session.create(tmp_path / "s", command=["prof", "run"], targets=[123])
    session.set_probe("nvml", "off", "no NVIDIA driver: GPU probes off")
    stacks = StackTable()
    leaf = stacks.intern([("main", "a.py", 1), ("work", "a.py", 2)])
    events = merge_events([
        make_events(ts_ns=[1, 2], source="stages", kind="span", name=["decode", "queue"], dur_ns=[1, 1],
                    stage=["decode", "queue"], request_id=["r1", "r1"], args=['{"k":1}', None]),
        make_events(ts_ns=[3], source="pyspy", kind="sample", name=["work"], stack_id=[leaf], value=[1.0]),
    ])
    session.save_timeline(events, stacks)
    session.anchor_clock()
    loaded = profiler.load(tmp_path / "s")
    pd.testing.assert_frame_equal(loaded.timeline, events)
    assert loaded.meta["probes"]["nvml"]["reason"].startswith("no NVIDIA driver")
    assert loaded.meta["targets"] == [123] and len(loaded.meta["clock"]["anchors"]) == 2
    assert loaded.stacks.frames_of(int(loaded.timeline["stack_id"].iloc[2]))[-1] == ("work", "a.py", 2)


def test_interrupted_session_loads_with_a_note(tmp_path: Path) -> None:
    Session.create(tmp_path / "s")
    loaded = profiler.load(tmp_path / "s")
    assert len(loaded.timeline) == 0 and "interrupted" in loaded.notes[0]
    with pytest.raises(SessionError, match="not a prof session"):
        profiler.load(tmp_path)
    (tmp_path / "s" / "meta.json").write_text("{broken")
    with pytest.raises(SessionError, match="unreadable"):
        profiler.load(tmp_path / "s")


def test_paths_cannot_escape_the_session(tmp_path: Path) -> None:
    session = Session.create(tmp_path / "s")
    with pytest.raises(SessionError, match="escapes"):
        session.raw_dir("../../etc")
    with pytest.raises(SessionError, match="escapes"):
        safe_child(tmp_path / "s", "/etc/passwd")
    assert session.raw_dir("ort") == (tmp_path / "s" / "raw" / "ort").resolve()
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["host"]["cores"] >= 1


def test_unwritable_output_directory_fails_before_anything_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SessionError, match="cannot write the session directory"):
        Session.create(blocker / "session")


def test_session_stopped_before_merging_loads_from_its_raw_artifacts(tmp_path: Path) -> None:
    import time as _time

    from probes.stages import SpanRecorder, Stage

    session = Session.create(tmp_path / "s")
    recorder = SpanRecorder(session.raw_dir("stages"), capacity=4)
    now = _time.perf_counter_ns()
    recorder.record(Stage.DECODE, now, now + 1_000, "r1", 0)
    recorder.flush()
    (session.raw_dir("ort") / "broken.json").write_text("[{")  # a probe cut off mid-write
    loaded = profiler.load(tmp_path / "s")
    assert loaded.timeline["name"].tolist() == ["decode"]
    assert loaded.timeline["request_id"].tolist() == ["r1"]
    assert any("rebuilt from raw" in n for n in loaded.notes)
    assert any(n.startswith("ort: not ingested") for n in loaded.notes)
