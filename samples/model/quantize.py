"""Reduced-precision variants derived from the fp32 ONNX graph with ONNX Runtime's tools."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

INPUT_NAME = "input"


def describe(precision: str) -> dict:
    """What was done to the weights and activations, for artifact.json."""
    if precision == "fp32":
        return {"method": "none"}
    if precision == "fp16":
        return {"method": "float16 conversion", "io_types": "float32 kept"}
    if precision == "int8-dynamic":
        return {"method": "dynamic", "weights": "int8", "activations": "uint8, ranges computed per call"}
    return {"method": "static", "format": "QDQ", "weights": "int8 per-channel", "activations": "uint8",
            "calibration": "MinMax on generated images"}


def derive(precision: str, fp32_path: Path, out_path: Path, calibration: np.ndarray) -> dict:
    import onnxruntime

    if precision == "fp16":
        _to_fp16(fp32_path, out_path)
    elif precision == "int8-dynamic":
        _int8_dynamic(fp32_path, out_path)
    elif precision == "int8-static":
        _int8_static(fp32_path, out_path, calibration)
    else:
        raise ValueError(f"unknown precision {precision!r}")
    return {"tool": "onnxruntime.quantization" if precision.startswith("int8") else "onnxruntime float16",
            "source": "fp32 artifact", "onnxruntime": onnxruntime.__version__}


def _to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def _int8_dynamic(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The exporter's value_info annotations trip the quantizer's own shape inference
    # (it re-infers after rewriting Gemm); dropping them lets it infer from scratch.
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory() as scratch:
        stripped = Path(scratch) / "stripped.onnx"
        onnx.save(model, str(stripped))
        quantize_dynamic(str(stripped), str(dst), weight_type=QuantType.QInt8)


class _ArrayReader:
    """Feeds calibration images one at a time to ORT's calibrator."""

    def __init__(self, batch: np.ndarray) -> None:
        self._items = iter([{INPUT_NAME: batch[i : i + 1]} for i in range(len(batch))])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def _int8_static(src: Path, dst: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(dst),
            _ArrayReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
