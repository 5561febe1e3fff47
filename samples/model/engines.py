"""Inference engines: the model half of the request path, one class per runtime.

Every engine splits a batch into the three stages the profiler reports separately:
``stage_input`` (h2d: host array to device memory, pinned or pageable), ``infer``
(inference) and ``fetch_output`` (d2h). On the CPU, h2d and d2h are the host-side
conversions the runtime needs, which is what they cost there.

What runs is decided from what the runtime reports, never from what was asked:
ONNX Runtime's ``session.get_providers()`` tells which execution providers loaded.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np

from samples.model import artifacts

Backend = Literal["torch-eager", "torch-inference", "torchscript", "torch-compile", "ort"]
BACKENDS: tuple[Backend, ...] = ("torch-eager", "torch-inference", "torchscript", "torch-compile", "ort")
Device = Literal["cpu", "cuda"]
OptLevel = Literal["disable", "basic", "extended", "all"]
OPT_LEVELS: tuple[OptLevel, ...] = ("disable", "basic", "extended", "all")


class EngineError(RuntimeError):
    """The requested engine cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class EngineSettings:
    backend: Backend = "ort"
    precision: artifacts.Precision = "fp32"
    device: Device = "cpu"
    model_path: Path | None = None
    input_size: int = 224
    ort_opt_level: OptLevel = "all"
    intra_op_threads: int = 0  # 0: one per core
    inter_op_threads: int = 1
    pinned: bool = False
    cache_dir: Path | None = None
    # Framework profiling (ORT's profiler or torch.profiler), on from session creation:
    # ORT cannot switch it on later. Output lands here when the engine closes.
    profile_dir: Path | None = None


class Engine(Protocol):
    name: str
    device: str
    input_size: int
    contract: Any

    def stage_input(self, batch: np.ndarray) -> Any: ...

    def infer(self, staged: Any) -> Any: ...

    def fetch_output(self, output: Any) -> np.ndarray: ...

    def describe(self) -> dict: ...

    def close(self) -> list[Path]: ...


@dataclass
class OrtEngine:
    session: Any
    device: str
    input_size: int
    contract: Any
    source: dict = field(default_factory=dict)
    name: str = "ort"
    profiling: bool = False
    # Builds a second session of the same model with profiling into a directory: how
    # profiling is switched on for a window (ORT decides profiling at session creation).
    profiled_session: Callable[[Path], Any] | None = None

    def __post_init__(self) -> None:
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self._serving_session: Any = None  # the session to go back to after a window

    def start_profiling(self, out_dir: Path) -> bool:
        """Serve from a freshly built profiling session until :meth:`stop_profiling`. Call it
        from the inference thread. False if profiling is on already or cannot be built."""
        if self.profiling or self.profiled_session is None:
            return False
        session = self.profiled_session(out_dir)
        self._serving_session, self.session = self.session, session
        self.profiling = True
        return True

    def stop_profiling(self) -> list[Path]:
        """End a profiling window (or profiling from start-up): write the profile, serve on."""
        paths = self.close()
        if self._serving_session is not None:
            self.session, self._serving_session = self._serving_session, None
        return paths

    def stage_input(self, batch: np.ndarray) -> Any:
        if self.device == "cuda":
            import onnxruntime

            return onnxruntime.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        return batch

    def infer(self, staged: Any) -> Any:
        if self.device == "cuda":
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self._input, staged)
            binding.bind_output(self._output, "cuda")
            self.session.run_with_iobinding(binding)
            return binding.get_outputs()[0]
        return self.session.run([self._output], {self._input: staged})[0]

    def fetch_output(self, output: Any) -> np.ndarray:
        array = output.numpy() if self.device == "cuda" else output
        return np.asarray(array, dtype=np.float32)

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "providers": self.session.get_providers(), **self.source}

    def close(self) -> list[Path]:
        """Write the ORT profile (with its clock anchor) if profiling is on."""
        if not self.profiling:
            return []
        from probes import ort as ort_probe

        self.profiling = False
        return [ort_probe.end_profiling(self.session)]


@dataclass
class TorchEngine:
    module: Any
    device: str
    input_size: int
    contract: Any
    name: str
    half: bool = False
    channels_last: bool = False
    pinned: bool = False
    inference_mode: bool = True  # False: plain no_grad, as most hand-written servers do
    source: dict = field(default_factory=dict)
    profile_dir: Path | None = None

    def __post_init__(self) -> None:
        import torch

        self._torch = torch
        self._staging: Any = None
        self._profiler: Any = None
        self._windows = 0

    def _start_profiler(self) -> None:
        # torch.profiler sees the CPU ops of the thread that starts it: start it on the
        # first inference call, from the inference thread, and close from there too.
        torch = self._torch
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._profiler = torch.profiler.profile(activities=activities)
        self._profiler.__enter__()

    def stage_input(self, batch: np.ndarray) -> Any:
        torch = self._torch
        tensor = torch.from_numpy(batch)
        if self.device == "cuda":
            if self.pinned:
                tensor = self._pinned_copy(tensor)
            tensor = tensor.to(self.device, non_blocking=self.pinned)
        if self.half:
            tensor = tensor.half()
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        self._sync()
        return tensor

    def _sync(self) -> None:
        # CUDA calls return once work is queued; without a sync the GPU time of inference
        # would be charged to whichever later stage first waits for it (d2h).
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def _pinned_copy(self, tensor: Any) -> Any:
        # One reusable page-locked buffer, grown when a larger batch arrives.
        if self._staging is None or self._staging.numel() < tensor.numel():
            self._staging = self._torch.empty(tensor.numel(), dtype=tensor.dtype, pin_memory=True)
        staged = self._staging[: tensor.numel()].view(tensor.shape)
        staged.copy_(tensor)
        return staged

    def infer(self, staged: Any) -> Any:
        if self.profile_dir is not None and self._profiler is None:
            self._start_profiler()
        guard = self._torch.inference_mode() if self.inference_mode else self._torch.no_grad()
        with guard:
            output = self.module(staged)
        self._sync()
        return output

    def fetch_output(self, output: Any) -> np.ndarray:
        return output.float().cpu().numpy()

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision": "fp16" if self.half else "fp32",
                "channels_last": self.channels_last, "pinned": self.pinned,
                "torch_threads": self._torch.get_num_threads(), **self.source}

    def close(self) -> list[Path]:
        """Stop torch.profiler and write its kineto trace if profiling is on. Call it from
        the thread that ran inference."""
        if self._profiler is None or self.profile_dir is None:
            return []
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self._windows += 1
        suffix = "" if self._windows == 1 else f"-{self._windows}"
        path = self.profile_dir / f"torch-{os.getpid()}{suffix}.json"
        profiler.export_chrome_trace(str(path))
        return [path]

    def start_profiling(self, out_dir: Path) -> bool:
        """Profile from the next inference call on (torch.profiler starts on the inference
        thread). False if profiling is on already."""
        if self.profile_dir is not None:
            return False
        self.profile_dir = Path(out_dir)
        return True

    def stop_profiling(self) -> list[Path]:
        """End the window from the inference thread: write the trace, serve unprofiled."""
        paths = self.close()
        self.profile_dir = None
        return paths


def cpu_threads(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def load_engine(settings: EngineSettings) -> Engine:
    """Build the engine ``settings`` ask for, or raise :class:`EngineError` saying why not."""
    if settings.device == "cuda":
        _require_cuda(settings.backend)
    if settings.backend == "ort":
        return _load_ort(settings)
    return _load_torch(settings)


def _require_cuda(backend: str) -> None:
    if backend == "ort":
        return  # checked against session.get_providers() once the session exists
    import torch

    if not torch.cuda.is_available():
        raise EngineError("--device cuda: torch sees no CUDA device (no NVIDIA driver or a CPU-only torch build)")


def ort_session(path: Path, settings: EngineSettings) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = {
        "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.ort_opt_level]
    options.intra_op_num_threads = cpu_threads(settings.intra_op_threads)
    options.inter_op_num_threads = max(1, settings.inter_op_threads)
    if settings.profile_dir is not None:
        from probes import ort as ort_probe

        ort_probe.enable_profiling(options, settings.profile_dir)
    providers = ["CPUExecutionProvider"]
    if settings.device == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT's own exception classes are not importable by name
        raise EngineError(f"ONNX Runtime cannot load {path}: {exc}") from exc
    running = session.get_providers()
    if settings.device == "cuda" and "CUDAExecutionProvider" not in running:
        raise EngineError(
            f"--device cuda: ONNX Runtime could not load its CUDA provider (running: {', '.join(running)}); "
            "check the NVIDIA driver, CUDA and cuDNN libraries, or use --device cpu"
        )
    return session


def _load_ort(settings: EngineSettings) -> OrtEngine:
    from samples import preprocess

    if settings.model_path is not None:
        path = _user_model(settings.model_path, ".onnx")
        session = ort_session(path, settings)
        size = _static_input_size(session) or settings.input_size
        contract = preprocess.PreprocessContract.for_input_size(size)
        return OrtEngine(session, settings.device, size, contract, {"model": str(path), "precision": "user"},
                         profiling=settings.profile_dir is not None,
                         profiled_session=_profiled_ort_session(path, settings))
    artifact = _artifact(settings, settings.precision)
    session = ort_session(artifact.onnx_path, settings)
    source = {"model": str(artifact.directory), "precision": artifact.precision,
              "opt_level": settings.ort_opt_level, "intra_op_threads": cpu_threads(settings.intra_op_threads)}
    return OrtEngine(session, settings.device, settings.input_size, artifact.contract, source,
                     profiling=settings.profile_dir is not None,
                     profiled_session=_profiled_ort_session(artifact.onnx_path, settings))


def _profiled_ort_session(path: Path, settings: EngineSettings) -> Callable[[Path], Any]:
    def build(out_dir: Path) -> Any:
        return ort_session(path, dataclasses.replace(settings, profile_dir=Path(out_dir)))

    return build


def _load_torch(settings: EngineSettings) -> TorchEngine:
    import torch

    from samples import preprocess

    if settings.precision.startswith("int8"):
        raise EngineError(f"{settings.precision} runs on the ort backend only (use --backend ort)")
    half = settings.precision == "fp16"
    if half and settings.device != "cuda":
        raise EngineError("fp16 with torch needs --device cuda (CPU fp16 convolutions are slower than fp32)")
    torch.set_num_threads(cpu_threads(settings.intra_op_threads))
    if settings.model_path is not None:
        path = _user_model(settings.model_path, ".pt", ".pth", ".ts")
        module = torch.jit.load(str(path), map_location=settings.device).eval()
        if half:
            module = module.half()
        contract = preprocess.PreprocessContract.for_input_size(settings.input_size)
        return TorchEngine(module, settings.device, settings.input_size, contract, "torchscript",
                           half=half, pinned=settings.pinned, source={"model": str(path)},
                           profile_dir=settings.profile_dir)
    artifact = _artifact(settings, "fp32")
    model = artifacts.load_torch_model(artifact).to(settings.device)
    if half:
        model = model.half()
    channels_last = settings.backend in ("torch-inference", "torch-compile")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    module = _wrap_torch(model, settings)
    engine = TorchEngine(module, settings.device, settings.input_size, artifact.contract, settings.backend,
                         half=half, channels_last=channels_last, pinned=settings.pinned,
                         inference_mode=settings.backend != "torch-eager",
                         source={"model": str(artifact.directory)}, profile_dir=settings.profile_dir)
    warm_up = engine.stage_input(np.zeros((1, 3, settings.input_size, settings.input_size), np.float32))
    with torch.inference_mode():
        engine.module(warm_up)
    return engine


def _wrap_torch(model: Any, settings: EngineSettings) -> Any:
    import torch

    if settings.backend == "torchscript":
        example = torch.zeros(1, 3, settings.input_size, settings.input_size, device=settings.device)
        if settings.precision == "fp16":
            example = example.half()
        with torch.inference_mode(False), torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(model, example))
    if settings.backend == "torch-compile":
        return torch.compile(model, dynamic=True)
    return model


def _artifact(settings: EngineSettings, precision: artifacts.Precision) -> artifacts.Artifact:
    build = artifacts.BuildSettings(precision=precision, input_size=settings.input_size)
    return artifacts.ensure_artifact(build, settings.cache_dir)


def _user_model(path: Path, *suffixes: str) -> Path:
    if not path.is_file():
        raise EngineError(f"model file not found: {path}")
    if path.suffix.lower() not in suffixes:
        raise EngineError(f"{path}: expected a {' or '.join(suffixes)} file for this backend")
    return path


def _static_input_size(session: Any) -> int | None:
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and isinstance(shape[2], int) and shape[2] == shape[3]:
        return int(shape[2])
    return None
