"""`prof import` on real files of every supported format, plus broken ones."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import profiler
from probes.ort import enable_profiling, end_profiling
from probes.pyspy import PySpyOptions, PySpyRecorder
from probes.scalene import run_under_scalene
from profiler.renderers.speedscope import render_speedscope
from samples.model.artifacts import BuildSettings, ensure_artifact
from tests.data import KINETO_DATA

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

DATA = KINETO_DATA


def prof(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def inputs(artifact_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("inputs")
    options = onnxruntime.SessionOptions()
    enable_profiling(options, out / "ort")
    session = onnxruntime.InferenceSession(str(ensure_artifact(BuildSettings(), artifact_cache).onnx_path), options,
                                           providers=["CPUExecutionProvider"])
    session.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})
    ort_profile = end_profiling(session)

    program = out / "busy.py"
    program.write_text("import time\nend = time.time() + 1.2\nwhile time.time() < end:\n    sum(range(10000))\n")
    target = subprocess.Popen([sys.executable, str(program)])
    time.sleep(0.2)
    recorder = PySpyRecorder(target.pid, out / "pyspy", PySpyOptions(rate=100))
    recorder.start()
    target.wait()
    chrometrace = recorder.stop()
    assert chrometrace is not None

    scalene_profile = run_under_scalene(program, [], out / "scalene.json")
    return {"ort": ort_profile, "pyspy": chrometrace, "scalene": scalene_profile}


def test_import_detects_each_format_and_reports_broken_files(inputs, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"traceEvents": [')
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"hello": "world"}')
    files = [inputs["ort"], inputs["pyspy"], inputs["scalene"], broken, unknown]
    files.append(DATA / "alexnet_a100_pageable_sync.json.gz")
    out = tmp_path / "session"
    result = prof("import", *map(str, files), "--out", str(out))
    assert result.returncode == 1, result.stderr  # some files skipped, the rest imported
    skipped = [line for line in result.stderr.splitlines() if line.startswith("prof import: skipped")]
    assert len(skipped) == 2 and "broken.json" in skipped[0] + skipped[1] and "unknown.json" in "".join(skipped)
    assert "Traceback" not in result.stderr
    session = profiler.load(out)
    sources = set(session.timeline["source"].unique())
    assert {"ort", "pyspy", "scalene"} <= sources
    assert "torch" in sources
    assert f"session {out}" in result.stdout


def test_import_of_a_gpu_trace_prints_its_bottleneck_and_saves_the_report(tmp_path: Path) -> None:
    from profiler.report_store import current_report as cached_report

    out = tmp_path / "session"
    result = prof("import", str(DATA / "alexnet_a100_pageable_sync.json.gz"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = cached_report(out)
    assert report is not None and {"pageable-h2d", "host-sync"} <= {f.rule for f in report.findings}
    top = report.findings[0]
    assert f"bottleneck: {top.title} ({top.rule})" in " ".join(result.stdout.split())


def test_speedscope_round_trip_keeps_stacks_and_times(inputs, tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert prof("import", str(inputs["pyspy"]), "--out", str(first)).returncode == 0
    session = profiler.load(first)
    speedscope = tmp_path / "profile.speedscope.json"
    speedscope.write_bytes(render_speedscope(session.timeline, session.stacks))
    second = tmp_path / "second"
    result = prof("import", str(speedscope), "--out", str(second))
    assert result.returncode == 0, result.stderr
    again = profiler.load(second)
    before = session.timeline[session.timeline["kind"] == "sample"]
    after = again.timeline[again.timeline["kind"] == "sample"]
    assert after["dur_ns"].sum() == before["dur_ns"].sum()
    assert int(after["ts_ns"].min()) == int(before["ts_ns"].min())
    leaf = lambda s, t: s.stacks.frames_of(int(t["stack_id"].iloc[0]))  # noqa: E731
    assert leaf(again, after) == leaf(session, before.sort_values("ts_ns"))


def test_import_with_nothing_importable_exits_2(tmp_path: Path) -> None:
    result = prof("import", str(tmp_path / "missing.json"), "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "missing.json" in result.stderr and "nothing imported" in result.stderr


def test_import_that_ingests_nothing_exits_2_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    """A recognised trace that cannot be read (here: a bad PROF_INGEST_WORKERS) is no silent empty session."""
    monkeypatch.setenv("PROF_INGEST_WORKERS", "many")
    result = prof("import", str(DATA / "alexnet_a100_pageable_sync.json.gz"), "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "PROF_INGEST_WORKERS='many'" in result.stderr and "nothing ingested" in result.stderr
