"""The calibration's data: the host key its figures depend on and the measured figures
themselves, with their JSON form (never pickled). Measuring and caching are in
``profiler.analysis.calibration``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import socket
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

CALIBRATION_VERSION = 1
BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16)
SAMPLE_MODEL = "sample ResNet-18"


class CalibrationError(RuntimeError):
    """The measurement could not run; the message says why."""


@dataclass(frozen=True)
class HostKey:
    """What the figures depend on besides the model: machine, runtime versions, threads."""

    hostname: str
    cpu_model: str
    cores: int
    torch: str
    onnxruntime: str
    threads: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def current_host(threads: int) -> HostKey:
    """The host key of this machine and interpreter for a thread count. Versions come from the
    installed distributions' metadata: importing torch to read its version costs seconds."""
    return HostKey(socket.gethostname(), _cpu_model(), os.cpu_count() or 1, _version("torch"),
                   _version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"), threads)


def _version(*distributions: str) -> str:
    for name in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return "absent"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@dataclass
class Calibration:
    """Measured factors of the sample model on one host, artifact and thread count.

    Times are median milliseconds per forward call (h2d + inference + d2h on the engine);
    stored speedups are medians of per-round ratios, > 1 meaning the alternative is faster.
    ``skipped`` names figures that were not measured, with the reason.
    """

    host: HostKey
    artifact_sha256: str
    batch_ms: dict[int, float]
    precision_speedup: dict[str, float]
    runtime_ms: dict[str, float]
    ort_opt_speedup: float
    measured_at: str
    repeats: int
    spread: dict[str, tuple[float, float]]
    skipped: dict[str, str] = field(default_factory=dict)
    quick: bool = False
    duration_s: float = 0.0
    # 1-minute load average before and after (ours included): well above ``threads`` means
    # other processes shared the cores and multi-thread figures are pessimistic.
    load_average: tuple[float, float] = (0.0, 0.0)
    # What was timed: the sample model, or the path of a user's ONNX file (``--model``).
    model: str = SAMPLE_MODEL

    @property
    def threads(self) -> int:
        return self.host.threads

    def covers(self, *batches: int) -> bool:
        """Whether every one of these batch sizes was timed (a user's model with a fixed batch
        dimension runs at that size only)."""
        return all(b in self.batch_ms for b in batches)

    def per_image_ms(self, batch: int) -> float:
        """Milliseconds per image when ORT fp32 runs batches of ``batch``."""
        return self.batch_ms[batch] / batch

    def batch_speedup(self, batch: int) -> float:
        """How much faster each image is served in batches of ``batch`` than one at a time."""
        return self.per_image_ms(1) / self.per_image_ms(batch)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        raw = asdict(self)
        raw["version"] = CALIBRATION_VERSION
        raw["batch_ms"] = {str(b): ms for b, ms in self.batch_ms.items()}
        raw["spread"] = {name: list(bounds) for name, bounds in self.spread.items()}
        raw["load_average"] = list(self.load_average)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_dict` output; ValueError if anything is missing or wrong."""
        try:
            fields = dict(raw)
            if fields.pop("version") != CALIBRATION_VERSION:
                raise ValueError(f"calibration format {raw['version']!r}, expected {CALIBRATION_VERSION}")
            fields["host"] = HostKey(**fields["host"])
            fields["batch_ms"] = dict(sorted((int(b), ms) for b, ms in fields["batch_ms"].items()))
            fields["spread"] = {name: (lo, hi) for name, (lo, hi) in fields["spread"].items()}
            fields["load_average"] = tuple(fields["load_average"])
            calibration = cls(**fields)
            calibration._check()
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a calibration: {exc!r}") from exc
        return calibration

    def _check(self) -> None:
        if not self.batch_ms or not set(self.batch_ms) <= set(BATCH_SIZES):
            raise ValueError(f"batch sizes {sorted(self.batch_ms)}, expected some of {list(BATCH_SIZES)}")
        figures = [*self.batch_ms.values(), *self.precision_speedup.values(), *self.runtime_ms.values(),
                   self.ort_opt_speedup, *(bound for pair in self.spread.values() for bound in pair)]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in figures):
            raise ValueError("calibration figures must be finite and positive")
