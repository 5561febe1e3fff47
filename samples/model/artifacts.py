"""Model artifacts: a directory per variant holding ``model.onnx`` and ``artifact.json``.

Variants of the seeded ResNet-18: ``fp32`` (exported by torch's ONNX exporter),
``fp16`` (fp32 graph converted, fp32 I/O kept; meant for CUDA), ``int8-dynamic`` and
``int8-static`` (QDQ, per-channel, calibrated on generated images). Each build checks the
variant against torch on a fixed batch and records the error; an fp32 export whose
relative L2 error exceeds 1e-3 fails.

Artifacts are cached under ``$PROF_CACHE_DIR`` (default ``~/.cache/prof``) keyed by a hash
of the model source, the build settings and the exporter/runtime versions, so editing the
model or upgrading torch rebuilds them. Builds happen in a temporary directory renamed
into place, so an interrupted build never leaves a half artifact behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from samples import images, preprocess

Precision = Literal["fp32", "fp16", "int8-dynamic", "int8-static"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8-dynamic", "int8-static")
ARTIFACT_VERSION = 1
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Largest relative L2 error against torch each variant may show on the check batch.
# fp32 is the contract; the others bound what reduced precision may cost.
MAX_RELATIVE_ERROR: dict[str, float] = {"fp32": 1e-3, "fp16": 1e-2, "int8-dynamic": 0.15, "int8-static": 0.15}
log = logging.getLogger("samples.model")
_SOURCES = ("resnet.py", "artifacts.py", "quantize.py")
WEIGHTS_FILE = "weights.npz"


class ArtifactError(RuntimeError):
    """An artifact could not be built or failed its equivalence check."""


@dataclass(frozen=True)
class BuildSettings:
    precision: Precision = "fp32"
    input_size: int = 224
    seed: int = 0
    opset: int = 18
    calibration_images: int = 32
    check_batch: int = 4

    @property
    def contract(self) -> preprocess.PreprocessContract:
        return preprocess.PreprocessContract.for_input_size(self.input_size)


@dataclass(frozen=True)
class Artifact:
    directory: Path
    meta: dict

    @property
    def onnx_path(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def precision(self) -> str:
        return self.meta["precision"]

    @property
    def contract(self) -> preprocess.PreprocessContract:
        raw = dict(self.meta["preprocessing"])
        raw["mean"], raw["std"] = tuple(raw["mean"]), tuple(raw["std"])
        return preprocess.PreprocessContract(**raw)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROF_CACHE_DIR") or Path.home() / ".cache" / "prof") / "models"


def build_key(settings: BuildSettings) -> str:
    import onnx
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    digest.update(Path(preprocess.__file__).read_bytes())
    digest.update(Path(images.__file__).read_bytes())
    versions = (torch.__version__, onnx.__version__, onnxruntime.__version__, ARTIFACT_VERSION)
    digest.update(json.dumps([asdict(settings), versions], sort_keys=True).encode())
    return digest.hexdigest()


def ensure_artifact(settings: BuildSettings, cache_dir: Path | None = None) -> Artifact:
    """Return the cached artifact for ``settings``, building it (and fp32 first) if needed."""
    cache_dir = cache_dir or default_cache_dir()
    key = build_key(settings)
    directory = _artifact_dir(cache_dir, settings, key)
    cached = _load_valid(directory, key)
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Several processes (uvicorn workers, parallel tests) may want the same artifact: one
    # builds while the others wait, then find it valid.
    with open(cache_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _load_valid(directory, key)
        if cached is not None:
            return cached
        return _build_and_install(settings, cache_dir, directory, key)


def _build_and_install(settings: BuildSettings, cache_dir: Path, directory: Path, key: str) -> Artifact:
    fp32 = None
    if settings.precision != "fp32":
        fp32 = _ensure_unlocked(BuildSettings(**{**asdict(settings), "precision": "fp32"}), cache_dir)
    log.info("building %s model artifact in %s (first use; cached afterwards)", settings.precision, directory)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        meta = _build(settings, staging, fp32)
        meta["build_key"] = key
        (staging / "artifact.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Artifact(directory, meta)


def _ensure_unlocked(settings: BuildSettings, cache_dir: Path) -> Artifact:
    """ensure_artifact for a caller that already holds the build lock."""
    key = build_key(settings)
    directory = _artifact_dir(cache_dir, settings, key)
    return _load_valid(directory, key) or _build_and_install(settings, cache_dir, directory, key)


def _artifact_dir(cache_dir: Path, settings: BuildSettings, key: str) -> Path:
    return cache_dir / f"resnet18-{settings.input_size}-{settings.precision}-{key[:12]}"


def load_artifact(directory: Path | str) -> Artifact:
    directory = Path(directory)
    meta_path = directory / "artifact.json"
    if not meta_path.is_file() or not (directory / "model.onnx").is_file():
        raise ArtifactError(f"{directory} is not a model artifact (needs model.onnx and artifact.json)")
    return Artifact(directory, json.loads(meta_path.read_text()))


def _load_valid(directory: Path, key: str) -> Artifact | None:
    try:
        artifact = load_artifact(directory)
    except (ArtifactError, json.JSONDecodeError):
        return None
    if artifact.meta.get("build_key") != key:
        return None
    if sha256_file(artifact.onnx_path) != artifact.meta.get("onnx_sha256"):
        return None
    return artifact


def generated_batch(count: int, contract: preprocess.PreprocessContract, first_seed: int) -> np.ndarray:
    """Preprocessed generated images, in varied sizes, through the real decode path."""
    sizes = ((640, 480), (500, 375), (800, 600), (300, 300))
    arrays = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        encoded = images.synthetic_encoded(first_seed + i, width, height, "jpeg")
        image = preprocess.decode_image(encoded, max_pixels=10_000_000)
        arrays.append(preprocess.preprocess_image(image, contract))
    return np.stack(arrays)


def _build(settings: BuildSettings, out: Path, fp32: Artifact | None) -> dict:
    import onnx
    import onnxruntime
    import torch

    from samples.model import quantize, resnet

    calibration = generated_batch(settings.calibration_images, settings.contract, first_seed=1_000)
    check = generated_batch(settings.check_batch, settings.contract, first_seed=2_000_000)
    model = resnet.build_resnet18(settings.seed, calibration=torch.from_numpy(calibration))
    model_path = out / "model.onnx"
    if fp32 is None:
        exporter = _export_fp32(model, settings, model_path)
        save_weights(model, out / WEIGHTS_FILE)
    else:
        exporter = quantize.derive(settings.precision, fp32.onnx_path, model_path, calibration)
    with torch.inference_mode():
        expected = model(torch.from_numpy(check)).numpy()
    check_result = _equivalence(model_path, check, expected, settings.precision)
    onnx_model = onnx.load(str(model_path), load_external_data=False)
    return {
        "name": "resnet18",
        "version": ARTIFACT_VERSION,
        "precision": settings.precision,
        "quantization": quantize.describe(settings.precision),
        "opset": max(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")),
        "weights_sha256": _state_dict_sha256(model),
        "onnx_sha256": sha256_file(model_path),
        "seed": settings.seed,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, settings.input_size, settings.input_size],
                  "layout": "NCHW", "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", resnet.NUM_CLASSES], "dtype": "float32"},
        "preprocessing": settings.contract.to_dict(),
        "exporter": exporter,
        "runtime": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "equivalence": check_result,
    }


def _export_fp32(model, settings: BuildSettings, path: Path) -> dict:
    import torch

    example = torch.zeros(2, 3, settings.input_size, settings.input_size)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=settings.opset,
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    return {"tool": "torch.onnx.export", "dynamo": True, "torch": torch.__version__}


def _equivalence(path: Path, batch: np.ndarray, expected: np.ndarray, precision: str) -> dict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    except Exception as exc:  # ORT raises its own exception types; any failure here is fatal
        raise ArtifactError(f"{precision} artifact does not run on ONNX Runtime CPU: {exc}") from exc
    max_abs = float(np.max(np.abs(actual - expected)))
    relative_l2 = float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))
    top1 = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
    limit = MAX_RELATIVE_ERROR[precision]
    result = {"batch": int(len(batch)), "provider": "CPUExecutionProvider", "max_abs_error": max_abs,
              "relative_l2_error": relative_l2, "top1_agreement": top1, "relative_l2_limit": limit,
              "reference": "torch eager fp32"}
    if not relative_l2 <= limit:
        raise ArtifactError(
            f"{precision} export differs from torch: relative L2 error {relative_l2:.3g} > {limit:g} "
            f"(max abs {max_abs:.3g})"
        )
    return result


def save_weights(model, path: Path) -> None:
    arrays = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
    np.savez(path, **arrays)


def load_torch_model(artifact: Artifact):
    """The torch ResNet-18 with exactly the weights of an fp32 artifact (an npz, not a pickle)."""
    import torch

    from samples.model import resnet

    path = artifact.directory / WEIGHTS_FILE
    if not path.is_file():
        raise ArtifactError(f"{artifact.directory} has no {WEIGHTS_FILE}: torch backends need the fp32 artifact")
    model = resnet.ResNet18()
    with np.load(path, allow_pickle=False) as data:
        state = {name: torch.from_numpy(data[name]) for name in data.files}
    model.load_state_dict(state)
    return model.eval()


def _state_dict_sha256(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
