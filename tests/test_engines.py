from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samples.model import artifacts
from samples.model.engines import EngineError, EngineSettings, load_engine

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return artifacts.generated_batch(3, artifacts.BuildSettings().contract, first_seed=77)


@pytest.fixture(scope="module")
def reference(artifact_cache: Path, batch: np.ndarray) -> np.ndarray:
    engine = load_engine(EngineSettings(backend="ort", cache_dir=artifact_cache, intra_op_threads=2))
    return engine.fetch_output(engine.infer(engine.stage_input(batch)))


def run(engine, batch: np.ndarray) -> np.ndarray:
    return engine.fetch_output(engine.infer(engine.stage_input(batch)))


@pytest.mark.parametrize("backend", ["torch-eager", "torch-inference", "torchscript", "torch-compile"])
def test_torch_backends_agree_with_onnx_runtime(backend, artifact_cache, batch, reference) -> None:
    engine = load_engine(EngineSettings(backend=backend, cache_dir=artifact_cache, intra_op_threads=2))
    out = run(engine, batch)
    assert out.shape == (3, 1000)
    np.testing.assert_allclose(out, reference, rtol=1e-3, atol=1e-3)
    assert engine.describe()["backend"] == backend


@pytest.mark.parametrize("level", ["disable", "basic", "extended"])
def test_ort_optimization_levels_give_the_same_answer(level, artifact_cache, batch, reference) -> None:
    engine = load_engine(EngineSettings(backend="ort", ort_opt_level=level, cache_dir=artifact_cache))
    np.testing.assert_allclose(run(engine, batch), reference, rtol=1e-3, atol=1e-3)
    assert engine.describe()["opt_level"] == level


def test_int8_static_keeps_the_top_class(artifact_cache, batch, reference) -> None:
    engine = load_engine(EngineSettings(backend="ort", precision="int8-static", cache_dir=artifact_cache))
    out = run(engine, batch)
    assert (out.argmax(1) == reference.argmax(1)).mean() >= 2 / 3


def test_user_supplied_onnx_and_torchscript_files(artifact_cache, batch, reference, tmp_path) -> None:
    artifact = artifacts.ensure_artifact(artifacts.BuildSettings(), artifact_cache)
    onnx_copy = tmp_path / "mine.onnx"
    onnx_copy.write_bytes(artifact.onnx_path.read_bytes())
    engine = load_engine(EngineSettings(backend="ort", model_path=onnx_copy))
    np.testing.assert_allclose(run(engine, batch), reference, rtol=1e-4, atol=1e-4)
    assert engine.describe()["model"] == str(onnx_copy)

    scripted = torch.jit.trace(artifacts.load_torch_model(artifact), torch.zeros(1, 3, 224, 224))
    ts_path = tmp_path / "mine.pt"
    scripted.save(str(ts_path))
    engine = load_engine(EngineSettings(backend="torch-eager", model_path=ts_path))
    np.testing.assert_allclose(run(engine, batch), reference, rtol=1e-3, atol=1e-3)


def test_bad_requests_raise_engine_errors_that_say_why(tmp_path) -> None:
    with pytest.raises(EngineError, match="not found"):
        load_engine(EngineSettings(backend="ort", model_path=tmp_path / "missing.onnx"))
    wrong = tmp_path / "model.bin"
    wrong.write_bytes(b"x")
    with pytest.raises(EngineError, match="expected a .onnx"):
        load_engine(EngineSettings(backend="ort", model_path=wrong))
    with pytest.raises(EngineError, match="ort backend only"):
        load_engine(EngineSettings(backend="torch-eager", precision="int8-static"))


@pytest.mark.parametrize("backend", ["ort", "torch-eager"])
def test_cuda_runs_on_a_gpu_or_is_refused_clearly(backend, artifact_cache, batch, reference) -> None:
    settings = EngineSettings(backend=backend, device="cuda", cache_dir=artifact_cache)
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="--device cuda"):
            load_engine(settings)
        return
    engine = load_engine(settings)
    assert engine.describe()["device"] == "cuda"
    np.testing.assert_allclose(run(engine, batch), reference, rtol=1e-2, atol=1e-2)
