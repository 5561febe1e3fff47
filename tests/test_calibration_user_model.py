"""Calibration of a user's own ONNX model (`prof report --model FILE.onnx`): the gains of a
server prof did not write are then timed on its model, not on the sample ResNet-18. Real
exports of small torch models, real ONNX Runtime and quantizer, quick rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from profiler.analysis import calibration as cal
from profiler.analysis.calibration_model import BATCH_SIZES
from samples.model import artifacts
from tests.tui_session import make_tui_session

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

PROF = [sys.executable, "-m", "profiler.cli"]


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def export(path: Path, dynamic_batch: bool, model: nn.Module | None = None, example=None) -> Path:
    torch.manual_seed(0)
    model = (model or SmallNet()).eval()
    example = example if example is not None else torch.randn(2 if dynamic_batch else 1, 3, 32, 32)
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic_batch else None
    torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_shapes=shapes, external_data=False, dynamo=True, verbose=False)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("models")
    return {"dynamic": export(directory / "small.onnx", True), "fixed": export(directory / "fixed.onnx", False)}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_a_user_model_with_a_dynamic_batch_is_timed_at_every_batch_size(models, cache_dir) -> None:
    measured = cal.load_or_calibrate(threads=1, cache_dir=cache_dir, quick=True, isolated=False,
                                     model=models["dynamic"])
    assert sorted(measured.batch_ms) == list(BATCH_SIZES) and measured.covers(1, 16)
    assert measured.model == str(models["dynamic"].resolve())
    assert measured.artifact_sha256 == artifacts.sha256_file(models["dynamic"])
    for precision in cal.CPU_PRECISIONS:  # timed, or skipped with the quantizer's reason
        assert f"{precision}@1" in measured.precision_speedup or precision in measured.skipped
    assert "int8-static@1" in measured.precision_speedup and "int8-static@8" in measured.precision_speedup
    assert set(measured.runtime_ms) == {"ort"} and "torch-eager" in measured.skipped
    assert measured.ort_opt_speedup > 0
    # cached per file and host: asked again, the same figures come back without measuring
    again = cal.load_or_calibrate(threads=1, cache_dir=cache_dir, quick=True, isolated=False,
                                  model=models["dynamic"])
    assert again == measured
    assert cal.cache_path(measured.host, artifacts.sha256_file(models["dynamic"]), cache_dir).is_file()


def test_a_fixed_batch_model_is_timed_at_its_batch_only(models, cache_dir) -> None:
    measured = cal.calibrate(threads=1, quick=True, model=models["fixed"])
    assert list(measured.batch_ms) == [1] and measured.covers(1) and not measured.covers(1, 2)
    assert "fixed at 1" in measured.skipped["batch"]


def test_a_model_that_is_not_an_image_classifier_is_one_clear_error(tmp_path: Path) -> None:
    path = export(tmp_path / "linear.onnx", False, nn.Linear(8, 2), torch.randn(1, 8))
    with pytest.raises(cal.CalibrationError, match="one float NCHW input"):
        cal.calibrate(threads=1, quick=True, model=path)
    with pytest.raises(cal.CalibrationError, match="one float NCHW input"):  # the same line from the child
        cal.calibrate_in_subprocess(threads=1, quick=True, model=path)


def test_prof_report_model_times_the_users_model_for_its_gains(models, tmp_path: Path) -> None:
    session = make_tui_session(tmp_path / "session")
    env = {**os.environ, "PROF_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([*PROF, "report", str(session), "--json", "--model", str(models["dynamic"])],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    batching = next(f for f in report["findings"] if f["rule"] == "batching-opportunity")
    assert batching["estimated_gain"]["method"] == "calibrated"
    assert any("with small.onnx" in line for line in batching["estimated_gain"]["assumptions"])
    bad = subprocess.run([*PROF, "report", str(session), "--model", str(tmp_path / "missing.onnx")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "not an .onnx file" in bad.stderr and "Traceback" not in bad.stderr
