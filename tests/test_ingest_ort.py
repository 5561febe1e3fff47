"""ONNX Runtime profiles from a real profiled session."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from probes.ort import OrtProfileError, enable_profiling, end_profiling, ingest_ort_profile
from samples.model.artifacts import BuildSettings, ensure_artifact


@pytest.fixture(scope="module")
def profile(artifact_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    out = tmp_path_factory.mktemp("ort")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    enable_profiling(options, out)
    model = ensure_artifact(BuildSettings(), artifact_cache).onnx_path
    session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    before = time.time_ns()
    for _ in range(3):
        session.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})
    after = time.time_ns()
    return end_profiling(session), before, after


def test_profile_ingests_on_the_epoch_clock(profile) -> None:
    path, before, after = profile
    result = ingest_ort_profile(path)
    events = result.events
    assert not result.warnings
    runs = events[events["name"] == "model_run"]
    assert len(runs) == 3
    assert (runs["ts_ns"] >= before - 1_000_000).all() and (runs["ts_ns"] + runs["dur_ns"] <= after + 1_000_000).all()
    nodes = events[events["args"].str.contains('"cat":"Node"')]
    ops = {json.loads(a)["op"] for a in nodes["args"]}
    assert {"Conv", "MaxPool", "Gemm"} <= ops
    assert all(json.loads(a)["provider"] == "CPUExecutionProvider" for a in nodes["args"])
    assert not nodes["name"].str.endswith("_kernel_time").any()
    assert (nodes["stage"] == "inference").all()
    # each run's nodes lie inside that run
    for _, run in runs.iterrows():
        inside = nodes[(nodes["ts_ns"] >= run["ts_ns"]) & (nodes["ts_ns"] < run["ts_ns"] + run["dur_ns"])]
        assert len(inside) == len(nodes) // 3


def test_truncated_profile_keeps_every_whole_event(profile, tmp_path) -> None:
    path, _, _ = profile
    whole = json.loads(path.read_text())
    text = path.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: int(len(text) * 0.6)])
    result = ingest_ort_profile(cut, start_ns=0)
    assert 0 < len(result.events) < len(whole)
    assert any("truncated" in w for w in result.warnings)
    assert result.events["name"].tolist() == [
        e["name"].removesuffix("_kernel_time") for e in whole[: len(result.events)]]


def test_profile_without_anchor_is_placed_at_zero_with_a_warning(profile, tmp_path) -> None:
    path, _, _ = profile
    bare = tmp_path / "bare.json"
    bare.write_text(path.read_text())
    result = ingest_ort_profile(bare)
    assert result.start_ns is None and any("no profiling start" in w for w in result.warnings)
    assert result.events["ts_ns"].min() < 10_000_000_000


@pytest.mark.parametrize("content", ["", "{}", "not json at all", "[{"])
def test_broken_files_raise_one_clear_error(tmp_path, content) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(OrtProfileError, match="bad.json"):
        ingest_ort_profile(bad, start_ns=0)
