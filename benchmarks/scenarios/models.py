"""Three small image classifiers for the scenario corpus, defined here (no torchvision,
no downloads, seeded random weights), and the artifacts the servers load.

Families (input 1x3xSxS float32, ImageNet-normalised, 1000 classes):

* ``resnet``    — ResNet-18 layout: 7x7 stem, four stages of two basic blocks.
* ``mobilenet`` — MobileNet-v1 (width 1.0): 13 depthwise-separable convolutions.
* ``vit``       — a small ViT: 16x16 patches, width 256, 6 pre-norm blocks of 4 heads.
* ``mlp``       — an MLP on 4x4-average-pooled pixels (3x56x56 -> 3072 -> 3072 -> 1000):
  41 M weights and little arithmetic per image, so batch 1 is bound by streaming the
  weights and batching pays (unlike the convnets on one CPU thread).

Artifacts (built on demand into ``$PROF_SCENARIO_CACHE`` or ``~/.cache/prof-scenarios``):

* ``fp32.onnx``  — ONNX export with a dynamic batch axis.
* ``int8.onnx``  — the fp32 graph quantised by onnxruntime (static QDQ for the convnets,
  calibrated on generated images; dynamic for the MatMuls of the ViT and the MLP).
* ``model.pt``   — TorchScript (``torch.jit.trace``) for the torch runtime.

Every build runs under an exclusive file lock and is written to a temporary name and
renamed into place, so concurrent servers starting at once never see half a file.
The cache key covers this file's and preprocessing.py's source and the torch / onnxruntime
versions.

    .venv/bin/python benchmarks/scenarios/models.py [--build] [--time] [--prune]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("resnet", "mobilenet", "vit", "mlp")
ARTIFACTS = ("fp32", "int8", "torchscript")
NUM_CLASSES = 1000
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    family: str
    input_size: int
    seed: int


SPECS = {
    "resnet": ModelSpec("resnet", 224, 11),
    "mobilenet": ModelSpec("mobilenet", 224, 12),
    "vit": ModelSpec("vit", 224, 13),
    "mlp": ModelSpec("mlp", 224, 14),
}


# --------------------------------------------------------------------------- modules


def _torch():
    import torch

    return torch


def build_module(family: str):
    """The eager torch module of ``family`` with its seeded weights, in eval mode."""
    torch = _torch()
    from torch import nn

    spec = SPECS[family]
    torch.manual_seed(spec.seed)

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        def __init__(self, widths=(64, 128, 256, 512), depth: int = 2):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
            blocks, cin = [], widths[0]
            for i, w in enumerate(widths):
                for j in range(depth):
                    blocks.append(BasicBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                    cin = w
            self.blocks = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, NUM_CLASSES)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(self.pool(x), 1))

    def dw_separable(cin: int, cout: int, stride: int):
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True),
        )

    class MobileNet(nn.Module):
        # (out channels, stride) of each depthwise-separable layer: MobileNet-v1, width 1.0
        LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                  (512, 1), (512, 1), (1024, 2), (1024, 1))

        def __init__(self):
            super().__init__()
            layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
            cin = 32
            for cout, stride in self.LAYERS:
                layers.append(dw_separable(cin, cout, stride))
                cin = cout
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(cin, NUM_CLASSES)

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int, mlp: int):
            super().__init__()
            self.heads = heads
            self.norm1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, mlp)
            self.fc2 = nn.Linear(mlp, dim)
            self.act = nn.GELU()

        def forward(self, x):
            b, n, d = x.shape
            h = self.heads
            qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = torch.softmax((q @ k.transpose(-2, -1)) * (d // h) ** -0.5, dim=-1)
            x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
            return x + self.fc2(self.act(self.fc1(self.norm2(x))))

    class ViT(nn.Module):
        def __init__(self, size: int, patch: int = 16, dim: int = 256, depth: int = 6, heads: int = 4):
            super().__init__()
            self.patch = nn.Conv2d(3, dim, patch, patch)
            tokens = (size // patch) ** 2
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
            self.blocks = nn.Sequential(*[Block(dim, heads, dim * 4) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, NUM_CLASSES)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            x = self.norm(self.blocks(x))
            return self.head(x[:, 0])

    class PixelMLP(nn.Module):
        def __init__(self, pool: int = 4, hidden: int = 3072):
            super().__init__()
            self.pool = nn.AvgPool2d(pool)
            inputs = 3 * (spec.input_size // pool) ** 2
            self.layers = nn.Sequential(
                nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, NUM_CLASSES),
            )

        def forward(self, x):
            return self.layers(torch.flatten(self.pool(x), 1))

    if family == "resnet":
        module = ResNet18()
    elif family == "mobilenet":
        module = MobileNet()
    elif family == "vit":
        module = ViT(spec.input_size)
    elif family == "mlp":
        module = PixelMLP()
    else:
        raise ValueError(f"unknown model family {family!r}; one of {FAMILIES}")
    # random BatchNorm statistics so that the folded graph is not trivially the identity
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return module.eval()


# --------------------------------------------------------------------------- cache


def cache_root() -> Path:
    return Path(os.environ.get("PROF_SCENARIO_CACHE") or Path.home() / ".cache" / "prof-scenarios")


def _cache_key() -> str:
    # versions from the installed metadata: importing torch only for its version would put
    # ~140k objects on an ONNX Runtime server's heap
    from importlib.metadata import PackageNotFoundError, version

    def installed(*names: str) -> str:
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                continue
        return "none"

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(__file__).with_name("preprocessing.py").read_bytes())  # int8 calibration inputs
    digest.update(f"{installed('torch')}|{installed('onnxruntime-gpu', 'onnxruntime')}".encode())
    return digest.hexdigest()[:12]


def artifact_dir(family: str) -> Path:
    return cache_root() / f"{family}-{_cache_key()}"


_FILENAMES = {"fp32": "fp32.onnx", "int8": "int8.onnx", "torchscript": "model.pt"}


@contextlib.contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_target(final: Path) -> Path:
    """A temporary file beside ``final``, renamed onto it once complete (os.replace)."""
    fd, name = tempfile.mkstemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent)
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(name)


def artifact_path(family: str, kind: str) -> Path:
    """Path of the ``kind`` artifact of ``family``, built first if missing. Builds run
    under an exclusive lock on the family's directory; readers of an existing file take no
    lock (files only ever appear complete, by rename)."""
    if kind not in _FILENAMES:
        raise ValueError(f"unknown artifact {kind!r}; one of {ARTIFACTS}")
    directory = artifact_dir(family)
    final = directory / _FILENAMES[kind]
    if final.exists():
        return final
    with _locked(directory):
        _build_locked(directory, family, kind)  # a no-op if another process built it meanwhile
    return final


def _build_locked(directory: Path, family: str, kind: str) -> Path:
    final = directory / _FILENAMES[kind]
    if final.exists():
        return final
    if kind == "fp32":
        _build_onnx(family, final)
    elif kind == "int8":
        _build_int8(family, _build_locked(directory, family, "fp32"), final)
    else:
        _build_torchscript(family, final)
    return final


def _example(family: str, batch: int = 1):
    torch = _torch()
    size = SPECS[family].input_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _build_onnx(family: str, final: Path) -> None:
    torch = _torch()
    module = build_module(family)
    tmp = _atomic_target(final)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, (_example(family, 2),), str(tmp), input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
            )
        _check_onnx(family, module, tmp, tolerance=1e-3)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _check_onnx(family: str, module, path: Path, tolerance: float) -> float:
    import numpy as np
    import onnxruntime as ort

    torch = _torch()
    x = _example(family, 3)
    with torch.no_grad():
        expected = module(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    error = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
    if error > tolerance:
        raise RuntimeError(f"{family}: {path.name} differs from torch (relative L2 error {error:.3g})")
    return error


def calibration_batches(family: str, count: int = 16):
    """Generated images, preprocessed exactly as the servers do: quantisation calibration."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.scenarios.preprocessing import to_tensor
    from samples.images import synthetic_image

    size = SPECS[family].input_size
    return [to_tensor(synthetic_image(9000 + i, 320, 240), size) for i in range(count)]


def _build_int8(family: str, source: Path, final: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tmp = _atomic_target(final)
    prepared = _atomic_target(final.with_name("prepared.onnx"))
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if family in ("vit", "mlp"):
            quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        else:
            batches = calibration_batches(family)

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self._it = iter(batches)

                def get_next(self):
                    batch = next(self._it, None)
                    return None if batch is None else {"input": batch}

            quantize_static(
                str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )
        _check_onnx(family, build_module(family), tmp, tolerance=0.5)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)


def _build_torchscript(family: str, final: Path) -> None:
    torch = _torch()
    module = build_module(family)
    tmp = _atomic_target(final)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, _example(family, 1))
        traced.save(str(tmp))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def prune() -> list[Path]:
    """Remove artifact directories of other cache keys (older model code or versions)."""
    import shutil

    root = cache_root()
    current = {artifact_dir(f).name for f in FAMILIES}
    removed = []
    if root.is_dir():
        for directory in sorted(root.iterdir()):
            family = directory.name.rsplit("-", 1)[0]
            if directory.is_dir() and family in FAMILIES and directory.name not in current:
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory)
    return removed


def build_all(families=FAMILIES) -> dict[str, dict[str, Path]]:
    return {f: {k: artifact_path(f, k) for k in ARTIFACTS} for f in families}


# --------------------------------------------------------------------------- timing


def _time_all(repeats: int = 30) -> None:
    """Batch-1 latency and batch-8 cost per image of every family and runtime, 1 thread."""
    import onnxruntime as ort

    torch = _torch()
    torch.set_num_threads(1)

    def timed(run, x, count: int) -> float:
        for _ in range(2):
            run(x)
        started = time.perf_counter()
        for _ in range(count):
            run(x)
        return (time.perf_counter() - started) / count

    print("family     variant              batch 1    batch 8 (per image)")
    for family in FAMILIES:
        x1 = _example(family, 1)
        x8 = _example(family, 8)
        runners = {}
        eager = build_module(family)
        scripted = torch.jit.load(str(artifact_path(family, "torchscript")))
        runners["torch eager"] = eager, False
        runners["torchscript"] = scripted, False
        for kind in ("int8", "fp32"):
            for level in ("all", "none"):
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.graph_optimization_level = (
                    ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                    else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                )
                session = ort.InferenceSession(str(artifact_path(family, kind)), options,
                                               providers=["CPUExecutionProvider"])
                name = f"ort {kind}" + ("" if level == "all" else " unfused")
                runners[name] = functools.partial(_run_session, session), True
        with torch.inference_mode():
            for name, (run, numpy_input) in runners.items():
                a, b = (x1.numpy(), x8.numpy()) if numpy_input else (x1, x8)
                one = timed(run, a, repeats)
                eight = timed(run, b, max(3, repeats // 8)) / 8
                print(f"{family:10s} {name:18s} {one * 1000:7.1f} ms {eight * 1000:7.1f} ms", flush=True)


def _run_session(session, x):
    return session.run(None, {"input": x})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="build every artifact")
    parser.add_argument("--time", action="store_true", help="time batch-1 forwards on 1 thread")
    parser.add_argument("--prune", action="store_true", help="remove artifacts of other cache keys")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.prune:
        for directory in prune():
            print(f"removed {directory}")
    if args.build or not (args.time or args.prune):
        for family, paths in build_all().items():
            for kind, path in paths.items():
                print(f"{family:10s} {kind:12s} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.time:
        _time_all()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main())
