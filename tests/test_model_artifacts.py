from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from samples.model import artifacts
from samples.model.artifacts import ArtifactError, BuildSettings, ensure_artifact

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


@pytest.mark.parametrize("precision", artifacts.PRECISIONS)
def test_every_variant_exports_and_matches_torch(artifact_cache: Path, precision: str) -> None:
    artifact = ensure_artifact(BuildSettings(precision=precision), artifact_cache)
    meta = json.loads((artifact.directory / "artifact.json").read_text())
    check = meta["equivalence"]
    assert check["relative_l2_error"] <= artifacts.MAX_RELATIVE_ERROR[precision]
    assert check["top1_agreement"] >= 0.75
    if precision == "fp32":
        assert check["relative_l2_error"] < 1e-4 and check["max_abs_error"] < 1e-3
    else:
        assert check["relative_l2_error"] > 1e-6  # reduced precision really changed the numbers
    assert meta["opset"] >= 17
    assert meta["input"] == {"name": "input", "shape": ["batch", 3, 224, 224], "layout": "NCHW", "dtype": "float32"}
    assert meta["preprocessing"]["crop"] == 224 and meta["preprocessing"]["resize"] == 256
    assert len(meta["weights_sha256"]) == 64 and meta["quantization"]["method"]
    for key in ("torch", "onnx", "onnxruntime"):
        assert meta["runtime"][key]


def test_graph_has_a_dynamic_batch_axis_and_the_expected_ops(artifact_cache: Path) -> None:
    artifact = ensure_artifact(BuildSettings(precision="fp32"), artifact_cache)
    model = onnx.load(str(artifact.onnx_path))
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") == 20 and "Gemm" in ops  # 17 3x3/7x7 convs + 3 downsample 1x1


def test_quantized_graphs_contain_integer_ops(artifact_cache: Path) -> None:
    static = onnx.load(str(ensure_artifact(BuildSettings(precision="int8-static"), artifact_cache).onnx_path))
    assert "QuantizeLinear" in {n.op_type for n in static.graph.node}
    dynamic = onnx.load(str(ensure_artifact(BuildSettings(precision="int8-dynamic"), artifact_cache).onnx_path))
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} & {n.op_type for n in dynamic.graph.node}


def test_cached_artifact_is_reused_and_a_damaged_one_rebuilt(artifact_cache: Path) -> None:
    first = ensure_artifact(BuildSettings(precision="fp32"), artifact_cache)
    stamp = first.onnx_path.stat().st_mtime_ns
    again = ensure_artifact(BuildSettings(precision="fp32"), artifact_cache)
    assert again.directory == first.directory and again.onnx_path.stat().st_mtime_ns == stamp
    first.onnx_path.write_bytes(b"damaged")
    rebuilt = ensure_artifact(BuildSettings(precision="fp32"), artifact_cache)
    assert rebuilt.onnx_path.read_bytes() != b"damaged"
    assert rebuilt.meta["onnx_sha256"] == artifacts.sha256_file(rebuilt.onnx_path)


def test_changed_settings_build_a_different_artifact(artifact_cache: Path) -> None:
    base = artifacts.build_key(BuildSettings())
    assert artifacts.build_key(BuildSettings(seed=1)) != base
    assert artifacts.build_key(BuildSettings(input_size=256)) != base
    assert artifacts.build_key(BuildSettings()) == base


def test_export_fails_when_it_differs_from_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(artifacts.MAX_RELATIVE_ERROR, "fp32", 1e-15)
    with pytest.raises(ArtifactError, match="relative L2 error"):
        ensure_artifact(BuildSettings(precision="fp32", calibration_images=4), tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("resnet18")]  # no half artifact left
