"""A session holding every probe that can run here, built from real servers and loaded
through the public API."""

from __future__ import annotations

import pytest

import json

import profiler
from probes.nvml import NvmlSampler
from probes.proc import ProcSampler
from probes.pyspy import PySpyOptions, PySpyRecorder
from profiler.session import build_timeline
from profiler.session import Session
from tests.test_alignment import drive

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


def test_session_with_stages_ort_torch_pyspy_proc_and_nvml_off(start_server, tmp_path, jpeg_640) -> None:
    session = Session.create(tmp_path / "session", command=["test"])
    raw = session.path / "raw"
    ort_server = start_server("--spans-dir", str(raw / "stages"), "--framework-profile-dir", str(raw / "ort"))
    torch_server = start_server("--backend", "torch-inference", "--spans-dir", str(raw / "stages"),
                                "--framework-profile-dir", str(raw / "torch"))
    pyspy = PySpyRecorder(ort_server.pid, session.raw_dir("pyspy"), PySpyOptions(rate=50))
    proc = ProcSampler(ort_server.pid, session.raw_dir("proc"), interval_s=0.2)
    nvml = NvmlSampler(session.raw_dir("nvml"), pids={ort_server.pid})
    pyspy.start()
    proc.start()
    if not nvml.start():
        session.set_probe("nvml", "off", nvml.reason_off)
    drive(ort_server, jpeg_640, n=10)
    drive(torch_server, jpeg_640, n=4)
    pyspy.stop()
    proc.stop()
    nvml.stop()
    ort_server.stop()
    torch_server.stop()
    session.anchor_clock()
    warnings = build_timeline(session)
    assert not [w for w in warnings if "not ingested" in w], warnings

    loaded = profiler.load(session.path)
    timeline = loaded.timeline
    sources = set(timeline["source"].unique())
    assert {"stages", "ort", "torch", "pyspy", "proc"} <= sources
    if "nvml" not in sources:
        assert loaded.meta["probes"]["nvml"] == {"status": "off", "reason": "no NVIDIA driver: GPU probes off"}
    stages = timeline[timeline["source"] == "stages"]
    assert stages["request_id"].nunique() >= 14
    assert set(stages["pid"]) == {ort_server.pid, torch_server.pid}
    samples = timeline[timeline["kind"] == "sample"]
    assert len(samples) > 0 and (samples["pid"] == ort_server.pid).all()
    frames = loaded.stacks.frames_of(int(samples["stack_id"].iloc[-1]))
    assert frames and all(len(frame) == 3 for frame in frames)
    assert list(timeline["ts_ns"]) == sorted(timeline["ts_ns"])
    assert loaded.meta["clock"]["uncertainty_ns"] < 1_000_000
    meta = json.loads((session.path / "meta.json").read_text())
    assert len(meta["clock"]["anchors"]) == 2

    from profiler.renderers.chrome import render_chrome_trace
    from profiler.renderers.speedscope import render_speedscope
    from tests.chrome_trace_validator import validate_chrome_trace

    trace = json.loads(render_chrome_trace(timeline, loaded.stacks))
    assert validate_chrome_trace(trace) == []
    assert any(e["ph"] in ("s", "f") for e in trace["traceEvents"])  # requests flow into batches
    speedscope = json.loads(render_speedscope(timeline, loaded.stacks))
    assert speedscope["profiles"] and speedscope["shared"]["frames"]
