"""cpu-fallback: ORT nodes placed on the CPU provider inside a CUDA session.

This machine has no GPU, so no ORT session here can place a node on CUDA. The profile is real
(ONNX Runtime's own profiler on the sample ResNet-18, every node as ORT records it); a
**stand-in** then writes into each node's ``provider`` what a CUDA session records — the CUDA
provider, except for the op types made to fall back — and the result goes through the real
`prof import` and diagnosis. With a GPU, a real CUDA session's profile takes the same path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from samples.model import artifacts
from tests.imported import import_findings

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


@pytest.fixture(scope="module")
def cpu_profile(artifact_cache, tmp_path_factory) -> list[dict]:
    """A real ORT profile of three ResNet-18 forwards on the CPU provider."""
    model = artifacts.ensure_artifact(artifacts.BuildSettings(), artifact_cache)
    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path_factory.mktemp("ort") / "resnet")
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model.onnx_path), options, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for _ in range(3):
        session.run(None, {session.get_inputs()[0].name: batch})
    return json.loads(Path(session.end_profiling()).read_text())


def as_cuda_session(events: list[dict], fallback_ops: set[str]) -> list[dict]:
    """Stand-in for a CUDA session's profile (no GPU here): node events get the CUDA provider,
    except those of ``fallback_ops``, which stay on the CPU provider."""
    out = []
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            provider = "CPUExecutionProvider" if args.get("op_name") in fallback_ops else "CUDAExecutionProvider"
            event = {**event, "args": {**args, "provider": provider}}
        out.append(event)
    return out


def imported_findings(events: list[dict], tmp_path: Path) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    trace = tmp_path / "ort_profile.json"
    trace.write_text(json.dumps(events))
    return import_findings(trace, tmp_path / "session")


def test_nodes_falling_back_to_the_cpu_in_a_cuda_session_are_named(cpu_profile, tmp_path: Path) -> None:
    ops = {e["args"]["op_name"] for e in cpu_profile if e.get("cat") == "Node" and "op_name" in e.get("args", {})}
    assert "Gemm" in ops, ops  # ResNet-18's classifier head
    fallback = {"Gemm", "Flatten"} & ops
    finding = imported_findings(as_cuda_session(cpu_profile, fallback), tmp_path)["cpu-fallback"]
    assert set(finding.evidence["ops"]) == fallback
    nodes_per_run = sum(1 for e in cpu_profile if e.get("cat") == "Node" and e["args"].get("op_name") in fallback)
    assert finding.evidence["cpu_nodes"] == nodes_per_run
    assert 0 < finding.evidence["cpu_node_time_fraction"] < 0.5  # the classifier head, not the convolutions
    assert "CUDA EP" in finding.fix.summary


def test_a_session_wholly_on_cuda_or_wholly_on_cpu_has_no_fallback(cpu_profile, tmp_path: Path) -> None:
    assert "cpu-fallback" not in imported_findings(as_cuda_session(cpu_profile, set()), tmp_path / "cuda")
    assert "cpu-fallback" not in imported_findings(cpu_profile, tmp_path / "cpu")  # a CPU session: nothing fell
