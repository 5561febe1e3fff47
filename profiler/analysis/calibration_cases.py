"""What the calibration times: the sample model's cases (ORT fp32 at each batch size, its INT8
quantizations, its unoptimized graph, the torch runtimes, fp16 on CUDA) or a user's ONNX file's.
How they are timed, summarized and cached is :mod:`profiler.analysis.calibration`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from profiler.analysis.calibration_model import BATCH_SIZES, CalibrationError
from samples.model.engines import Engine, EngineError, EngineSettings, load_engine

PRECISION_BATCHES: tuple[int, ...] = (1, 8)
CPU_PRECISIONS: tuple[str, ...] = ("int8-static", "int8-dynamic")
RUNTIMES: tuple[str, ...] = ("ort", "torch-eager", "torch-inference", "torchscript")
COMPILE_SKIPPED = ("off by default: torch.compile adds about 40 s of compiling on a 2-core CPU "
                   "(include_compile=True / --compile measures it)")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Case:
    """One timed configuration: an engine and the batch it runs."""

    label: str
    engine: Engine
    batch: np.ndarray

    def run(self) -> float:
        start = time.perf_counter()
        self.engine.fetch_output(self.engine.infer(self.engine.stage_input(self.batch)))
        return (time.perf_counter() - start) * 1e3


def sample_cases(threads: int, include_compile: bool, skipped: dict[str, str]) -> list[Case]:
    def ort(precision: str = "fp32", level: str = "all") -> Engine:
        return load_engine(EngineSettings(backend="ort", precision=precision, ort_opt_level=level,
                                          intra_op_threads=threads, inter_op_threads=1))

    rng = np.random.default_rng(0)
    batches = {b: rng.standard_normal((b, 3, 224, 224)).astype(np.float32) for b in BATCH_SIZES}
    fp32 = ort()
    cases = [Case(f"ort-fp32@{b}", fp32, batches[b]) for b in BATCH_SIZES]
    for precision in CPU_PRECISIONS:
        engine = ort(precision)
        cases += [Case(f"ort-{precision}@{b}", engine, batches[b]) for b in PRECISION_BATCHES]
    cases.append(Case("ort-fp32-noopt@1", ort(level="disable"), batches[1]))
    backends = [r for r in RUNTIMES if r != "ort"] + (["torch-compile"] if include_compile else [])
    for backend in backends:
        engine = load_engine(EngineSettings(backend=backend, intra_op_threads=threads))
        cases.append(Case(f"{backend}@1", engine, batches[1]))
    if not include_compile:
        skipped["torch-compile"] = COMPILE_SKIPPED
    cases += _cuda_cases(batches, skipped)
    return cases


def model_cases(path: Path, threads: int, skipped: dict[str, str], scratch: Path, say: Progress) -> list[Case]:
    """Cases of a user's ONNX file: fp32 at the batch sizes its input allows, its INT8
    quantizations (each skipped with the reason when the quantizer cannot take the graph) and
    its graph without ORT's optimizations."""
    from samples.model import quantize

    def ort(model_path: Path, level: str = "all") -> Engine:
        try:
            return load_engine(EngineSettings(backend="ort", model_path=model_path, ort_opt_level=level,
                                              intra_op_threads=threads, inter_op_threads=1))
        except EngineError as exc:
            raise CalibrationError(str(exc)) from None

    fp32 = ort(path)
    inputs = fp32.session.get_inputs()
    shape = list(inputs[0].shape)
    if len(inputs) != 1 or len(shape) != 4 or inputs[0].type != "tensor(float)":
        raise CalibrationError(f"{path}: calibration times image classifiers with one float NCHW input; this model "
                               f"takes {', '.join(f'{i.name} {i.type} {i.shape}' for i in inputs)}")
    size = fp32.input_size
    fixed = shape[0] if isinstance(shape[0], int) else None
    sizes = BATCH_SIZES if fixed is None else tuple(b for b in BATCH_SIZES if b == fixed)
    if not sizes:
        raise CalibrationError(f"{path}: its batch dimension is fixed at {fixed}; calibration times batches of "
                               f"{', '.join(map(str, BATCH_SIZES))}")
    if fixed is not None:
        skipped["batch"] = f"the model's batch dimension is fixed at {fixed}: batch scaling cannot be measured"
    rng = np.random.default_rng(0)
    batches = {b: rng.standard_normal((b, 3, size, size)).astype(np.float32) for b in sizes}
    cases = [Case(f"ort-fp32@{b}", fp32, batches[b]) for b in sizes]
    for precision in CPU_PRECISIONS:
        say(f"quantizing the model ({precision})")
        target = scratch / f"{precision}.onnx"
        try:
            quantize.derive(precision, path, target, rng.standard_normal((8, 3, size, size)).astype(np.float32))
            engine = ort(target)
        except Exception as exc:  # the quantizer's failures have no common type; the figure is skipped
            skipped[precision] = f"could not quantize this model: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        cases += [Case(f"ort-{precision}@{b}", engine, batches[b]) for b in PRECISION_BATCHES if b in batches]
    first = sizes[0]
    cases.append(Case(f"ort-fp32-noopt@{first}", ort(path, "disable"), batches[first]))
    for backend in RUNTIMES[1:]:
        skipped[backend] = "a user's ONNX model has no torch form to time"
    return cases


def _cuda_cases(batches: dict[int, np.ndarray], skipped: dict[str, str]) -> list[Case]:
    # fp16 pays off only on a GPU; it is compared with fp32 on the same CUDA provider.
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers() or \
            not Path("/proc/driver/nvidia/version").exists():
        skipped["fp16"] = "no CUDA device: fp16 is measured only on CUDA (CPU fp16 convolutions are slower)"
        return []
    try:
        engines = {p: load_engine(EngineSettings(backend="ort", precision=p, device="cuda"))
                   for p in ("fp32", "fp16")}
    except EngineError as exc:
        skipped["fp16"] = str(exc)
        return []
    return [Case(f"ort-cuda-{p}@{b}", engine, batches[b])
            for p, engine in engines.items() for b in PRECISION_BATCHES]
