"""The GPU rules on real kineto traces (A100/V100, from Holistic Trace Analysis' test data in
tests/data/kineto), imported into sessions exactly as `prof import` does."""

from __future__ import annotations


import pytest

from profiler.analysis.diagnose import diagnose
from profiler.session import build_timeline, import_files
from profiler.session import Session, load
from tests.data import KINETO_DATA

DATA = KINETO_DATA


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    out = {}
    for name in ("alexnet_a100_pageable_sync", "a100_train_rank0", "v100_ns_resolution", "cpu_only"):
        path = tmp_path_factory.mktemp(name) / "session"
        session = Session.create(path, command=["prof", "import"])
        imported, errors = import_files([DATA / f"{name}.json.gz"], session)
        assert imported and not errors
        build_timeline(session)
        report = diagnose(load(path))
        out[name] = {f.rule: f for f in report.findings}
        assert not [n for n in report.notes if "failed" in n], report.notes
    return out


def test_pageable_h2d_names_the_sixteen_pageable_copies_of_the_alexnet_trace(reports) -> None:
    finding = reports["alexnet_a100_pageable_sync"]["pageable-h2d"]
    assert finding.evidence["pageable_htod_copies"] == 16
    assert finding.fix.knob == {"--pinned": "1"} and "pin_memory" in finding.fix.snippet
    assert finding.estimated_gain is not None and finding.estimated_gain.throughput_x >= 1.0
    assert "pageable-h2d" not in reports["v100_ns_resolution"]  # its copies are not pageable


def test_host_sync_counts_the_stream_syncs(reports) -> None:
    finding = reports["alexnet_a100_pageable_sync"]["host-sync"]
    assert finding.evidence["sync_kinds"]["Stream Sync"] == 16
    assert finding.evidence["blocked_ms"] > 0
    assert "host-sync" not in reports["v100_ns_resolution"] and "host-sync" not in reports["cpu_only"]


def test_device_idle_measures_gaps_between_gpu_work(reports) -> None:
    finding = reports["a100_train_rank0"]["device-idle"]
    assert 0.3 <= finding.evidence["idle_fraction"] < 1.0
    assert "device-idle" not in reports["v100_ns_resolution"] and "device-idle" not in reports["cpu_only"]


def test_reduced_precision_on_gpu_sees_single_precision_gemm_kernels(reports) -> None:
    finding = reports["a100_train_rank0"]["reduced-precision"]
    assert finding.evidence["fp32_kernel_fraction"] >= 0.2
    assert any("s1688gemm" in name for name in finding.evidence["top_kernels"])
    assert any("GPU" in a or "calibrated" in a for a in finding.estimated_gain.assumptions)
    assert "reduced-precision" not in reports["cpu_only"]


def test_findings_are_ranked_by_the_share_they_explain(reports) -> None:
    for findings in reports.values():
        shares = [f.share for f in findings.values()]
        assert shares == sorted(shares, reverse=True)
