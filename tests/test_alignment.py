"""One clock: events from different probes of a real server line up."""

from __future__ import annotations

import pytest

import concurrent.futures
import json

import httpx
import numpy as np

from probes.kineto import ingest_kineto
from probes.ort import ingest_ort_profile
from probes.stages import ingest_span_files
from profiler.timeline import merge_events

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

MS = 1_000_000


def drive(server, jpeg: bytes, n: int = 12) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        responses = list(pool.map(lambda _: httpx.post(f"{server.url}/classify", content=jpeg,
                                                       headers={"Content-Type": "image/jpeg"}, timeout=60),
                                  range(n)))
    assert all(r.status_code == 200 for r in responses)


def inference_spans(spans_dir) -> np.ndarray:
    stages = ingest_span_files(sorted(spans_dir.glob("spans-*.npz")))
    inference = stages[(stages["stage"] == "inference") & stages["request_id"].isna()]
    return np.stack([inference["ts_ns"].to_numpy(), (inference["ts_ns"] + inference["dur_ns"]).to_numpy()], axis=1)


def containing(intervals: np.ndarray, start: int, end: int, slack: int) -> bool:
    return bool(((intervals[:, 0] - slack <= start) & (end <= intervals[:, 1] + slack)).any())


def test_every_ort_model_run_lies_inside_a_stage_inference_span(start_server, tmp_path, jpeg_640) -> None:
    spans_dir, ort_dir = tmp_path / "spans", tmp_path / "ort"
    server = start_server("--spans-dir", str(spans_dir), "--framework-profile-dir", str(ort_dir))
    drive(server, jpeg_640)
    server.stop()
    profiles = [p for p in ort_dir.glob("ort-*.json") if not p.name.endswith(".anchor.json")]
    assert len(profiles) == 1
    ort_events = ingest_ort_profile(profiles[0]).events
    runs = ort_events[ort_events["name"] == "model_run"]
    windows = inference_spans(spans_dir)
    served = [(s, e) for s, e in zip(runs["ts_ns"], runs["ts_ns"] + runs["dur_ns"]) if s >= windows[:, 0].min() - MS]
    assert len(served) >= 12  # warm-up runs before serving are outside any request, and skipped
    for start, end in served:
        assert containing(windows, start, end, slack=MS), (start, end)
    merged = merge_events([ingest_span_files(sorted(spans_dir.glob("*.npz"))), ort_events])
    assert list(merged["ts_ns"]) == sorted(merged["ts_ns"])


def test_torch_profiler_ops_lie_inside_stage_inference_spans(start_server, tmp_path, jpeg_640) -> None:
    spans_dir, torch_dir = tmp_path / "spans", tmp_path / "torch"
    server = start_server("--backend", "torch-inference", "--spans-dir", str(spans_dir),
                          "--framework-profile-dir", str(torch_dir))
    drive(server, jpeg_640, n=6)
    server.stop()
    traces = list(torch_dir.glob("torch-*.json"))
    assert len(traces) == 1
    events = ingest_kineto(traces[0]).events
    convs = events[events["name"] == "aten::conv2d"]
    windows = inference_spans(spans_dir)
    served = convs[convs["ts_ns"] >= windows[:, 0].min() - MS]
    assert len(served) >= 6 * 20  # 20 convolutions per forward pass
    inside = [containing(windows, s, s + d, slack=MS) for s, d in zip(served["ts_ns"], served["dur_ns"])]
    assert all(inside), f"{inside.count(False)} of {len(inside)} conv ops outside inference spans"
    assert all(json.loads(a)["cat"] == "cpu_op" for a in served["args"])
