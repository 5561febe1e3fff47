"""Every CPU rule on real sessions of the sample server: a run with the knob that creates the
bottleneck must raise the finding, the run with the fix must not. Sessions come from
`prof run sample_server` (stage spans, py-spy, psutil, the wire, and ORT profiling where a
rule needs the graph); gains use a quick calibration of the model on this host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.analysis.calibration import load_or_calibrate
from profiler.analysis.diagnose import diagnose
from profiler.session import load

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

PROF = [sys.executable, "-m", "profiler.cli"]
COMMON = ("--duration", "4", "--warmup", "1", "--intra-op-threads", "1", "--concurrency", "8")
SCENARIOS = {
    # name: server knobs and load options
    "baseline": ("--duplicates", "0.6", "--probes", "all"),
    "fixed": ("--duplicates", "0.6", "--precision", "int8-static", "--max-batch", "8", "--cache", "lru"),
    "unfused": ("--ort-opt-level", "disable", "--probes", "all"),
    # INT8 keeps inference small, so preprocessing the big images stands well clear of its 20 % mark
    "big-images": ("--image-sizes", "4000x3000", "--concurrency", "4", "--precision", "int8-static"),
    "eager": ("--backend", "torch-eager"),
    "reload": ("--reload-per-request", "1", "--concurrency", "2"),
    "threads": ("--intra-op-threads", "4"),
}


@pytest.fixture(scope="module")
def calibration(artifact_cache):
    return load_or_calibrate(threads=1, quick=True)


@pytest.fixture(scope="module")
def session_of(artifact_cache, calibration, tmp_path_factory):
    """Factory: the session directory and findings (by rule) of a scenario, run once."""
    made: dict[str, tuple[Path, dict]] = {}

    def get(name: str) -> tuple[Path, dict]:
        if name not in made:
            out = tmp_path_factory.mktemp(name) / "session"
            result = subprocess.run([*PROF, "run", "sample_server", *COMMON, *SCENARIOS[name], "--out", str(out),
                                     "--quiet"], capture_output=True, text=True, timeout=300,
                                    env={**os.environ, "COLUMNS": "200"})
            assert result.returncode == 0, result.stderr + result.stdout
            report = diagnose(load(out), calibration_loader=lambda: calibration)
            assert not [n for n in report.notes if "failed" in n], report.notes
            made[name] = (out, {f.rule: f for f in report.findings})
        return made[name]

    return get


@pytest.fixture(scope="module")
def report_of(session_of):
    return lambda name: session_of(name)[1]


def test_batching_opportunity_when_concurrent_requests_run_one_by_one(report_of) -> None:
    finding = report_of("baseline")["batching-opportunity"]
    assert finding.evidence["in_flight_mean"] >= 4 and finding.evidence["mean_batch_size"] == 1.0
    assert finding.fix.knob["--max-batch"] in ("4", "8")
    gain = finding.estimated_gain
    assert gain.method == "calibrated" and gain.throughput_x >= 1.0
    assert finding.evidence["calibrated_speedup_per_image"] > 0
    assert "batching-opportunity" not in report_of("fixed")


def test_cache_opportunity_when_bodies_repeat_and_are_recomputed(report_of) -> None:
    finding = report_of("baseline")["cache-opportunity"]
    assert finding.evidence["repeated_fraction"] == pytest.approx(0.6, abs=0.12)
    assert finding.fix.knob == {"--cache": "lru"}
    assert "cache-opportunity" not in report_of("fixed")  # repeats answered from the cache, fast


def test_reduced_precision_int8_on_cpu(report_of) -> None:
    finding = report_of("baseline")["reduced-precision"]
    assert finding.evidence["calibrated_int8_speedup"] > 1.2
    assert finding.fix.knob["--precision"] == "int8-static"
    assert "reduced-precision" not in report_of("fixed")


def test_graph_fusion_when_ort_optimizations_are_off(report_of) -> None:
    finding = report_of("unfused")["graph-fusion"]
    assert finding.evidence["relu_nodes"] > 0 and finding.evidence["conv_nodes"] > 0  # from the ORT trace
    assert finding.fix.knob == {"--ort-opt-level": "all"}
    assert "graph-fusion" not in report_of("baseline")  # same trace, fused graph


def test_decode_and_preprocess_bound_on_twelve_megapixel_jpegs(report_of) -> None:
    big = report_of("big-images")
    assert big["decode-bound"].evidence["decode_share"] >= 0.2
    assert big["decode-bound"].fix.knob == {"--decode-draft": "1"}
    assert "preprocess-bound" in big
    assert "decode-bound" not in report_of("baseline") and "preprocess-bound" not in report_of("baseline")


def test_runtime_switch_from_eager_torch_to_ort(report_of) -> None:
    finding = report_of("eager")["runtime-switch"]
    assert finding.evidence["runtime"] == "torch-eager" and finding.fix.knob == {"--backend": "ort"}
    assert "runtime-switch" not in report_of("baseline")


def test_prof_diff_shows_the_reload_regression(session_of) -> None:
    """prof diff of a normal session against one that rebuilds the model per request: the
    model_load stage appears in B (loads during serving are kept; start-up loads are not)."""
    base, _ = session_of("fixed")
    reload, _ = session_of("reload")
    result = subprocess.run([*PROF, "diff", str(base), str(reload)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.strip().startswith("model_load")]
    assert len(rows) == 1, result.stdout
    stage, a_ms, b_ms, delta_ms, a_share, b_share = (cell.strip() for cell in rows[0].split("│"))
    assert a_ms == "" and a_share == ""  # no load while A served: its start-up load is not serving
    assert float(b_ms) > 1.0 and float(delta_ms) == pytest.approx(float(b_ms), rel=0.02)
    assert float(b_share.rstrip("%")) > 2.0
    assert "throughput req/s" in result.stdout


def test_model_reload_when_the_model_is_built_per_request(report_of) -> None:
    finding = report_of("reload")["model-reload"]
    assert finding.evidence["loads_during_window"] >= 2 and finding.share > 0.3
    assert "model-reload" not in report_of("baseline")


def test_thread_oversubscription_with_four_intra_op_threads_on_two_cores(report_of) -> None:
    if (os.cpu_count() or 1) > 2:
        pytest.fail("this scenario is sized for the 2-core CI machine")
    finding = report_of("threads")["thread-oversubscription"]
    # more threads at work at once than cores, some of them ORT's native pool (not Python threads)
    assert finding.evidence["threads_at_work"] > 2
    assert finding.evidence["native_threads_at_work"] is None or finding.evidence["native_threads_at_work"] >= 1
    assert "thread-oversubscription" not in report_of("baseline")


def test_prof_report_cli_json_schema_and_markdown_on_a_real_session(session_of) -> None:
    import json

    from profiler.analysis.model import Report

    path, findings = session_of("baseline")
    result = subprocess.run([*PROF, "report", str(path), "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema_version"] == 2
    for item in data["findings"]:
        assert {"rule", "severity", "share", "estimated_gain", "evidence", "fix"} <= set(item)
    assert all(h["basis"] for h in data["hotspots"])  # every share names its denominator
    work = [s for s in data["stages"] if s["kind"] == "work"]
    assert abs(sum(s["share"] for s in work) - 1.0) < 1e-6
    assert {f["rule"] for f in data["findings"]} >= {"batching-opportunity", "cache-opportunity"}
    assert Report.from_dict(data).to_dict() == data  # the schema round-trips
    markdown = subprocess.run([*PROF, "report", str(path), "--markdown", "--no-calibration"], capture_output=True,
                              text=True, timeout=120)
    assert markdown.returncode == 0 and "## Findings" in markdown.stdout and "batching-opportunity" in markdown.stdout
    text = subprocess.run([*PROF, "report", str(path), "--no-calibration"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "120"})
    assert text.returncode == 0 and "fix:" in text.stdout and "share of busy thread time" in text.stdout
    missing = subprocess.run([*PROF, "report", str(path.parent / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and "not a prof session" in missing.stderr and "Traceback" not in missing.stderr
