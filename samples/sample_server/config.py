"""Server knobs: one declaration gives the command-line flag, the environment variable
(``PROF_`` + the flag name in capitals) and the default. Flags win over the environment.

Every fix ``prof`` suggests maps onto one of these, so a suggestion can be checked by
re-running the server with that knob changed.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from samples.model.artifacts import PRECISIONS
from samples.model.engines import BACKENDS, OPT_LEVELS, EngineSettings

ENV_CONFIG = "PROF_SERVER_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "ort"
    precision: str = "fp32"
    model: str | None = None
    device: str = "cpu"
    input_size: int = 224
    ort_opt_level: str = "all"
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    max_batch: int = 1
    max_wait_ms: float = 5.0
    cache: str = "off"
    cache_size: int = 4096
    workers: int = 1
    cpu_threads: int = 2
    decode_draft: bool = False
    reload_per_request: bool = False
    pinned: bool = False
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    top_k: int = 5
    spans_dir: str | None = None
    framework_profile_dir: str | None = None
    agent: bool = True
    access_log: bool = False
    log_level: str = "info"

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            backend=self.backend,  # type: ignore[arg-type]
            precision=self.precision,  # type: ignore[arg-type]
            device=self.device,  # type: ignore[arg-type]
            model_path=Path(self.model) if self.model else None,
            input_size=self.input_size,
            ort_opt_level=self.ort_opt_level,  # type: ignore[arg-type]
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            pinned=self.pinned,
            profile_dir=Path(self.framework_profile_dir) if self.framework_profile_dir else None,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def _cache(text: str) -> str:
    if text in ("off", "lru") or text.startswith(("redis://", "rediss://", "unix://")):
        return text
    raise argparse.ArgumentTypeError("cache must be off, lru, or a redis:// URL")


# (flag, type, choices, help)
_OPTIONS: tuple[tuple[str, Callable[[str], Any], tuple[str, ...] | None, str], ...] = (
    ("host", str, None, "address to bind (default 127.0.0.1: loopback only)"),
    ("port", _positive(int), None, "TCP port (default 8000)"),
    ("backend", str, BACKENDS, "inference runtime (default ort)"),
    ("precision", str, PRECISIONS, "model precision; int8 needs --backend ort, fp16 needs CUDA"),
    ("model", str, None, "your own .onnx (ort) or TorchScript .pt (torch backends) instead of ResNet-18"),
    ("device", str, ("cpu", "cuda"), "where inference runs (default cpu)"),
    ("input-size", _positive(int), None, "model input resolution (default 224)"),
    ("ort-opt-level", str, OPT_LEVELS, "ONNX Runtime graph optimization level (default all)"),
    ("intra-op-threads", _positive(int), None, "threads inside one op (torch or ORT); 0 = one per core"),
    ("inter-op-threads", _positive(int), None, "ORT threads across independent ops (default 1)"),
    ("max-batch", _positive(int), None, "dynamic batching: largest batch; 1 turns batching off (default)"),
    ("max-wait-ms", _positive(float), None, "dynamic batching: longest wait for a batch to fill (default 5)"),
    ("cache", _cache, None, "result cache keyed by content hash: off, lru, or redis://host:port/db"),
    ("cache-size", _positive(int), None, "entries kept by the lru cache (default 4096)"),
    ("workers", _positive(int), None, "uvicorn worker processes (default 1)"),
    ("cpu-threads", _positive(int), None, "threads for decode and preprocess (default 2)"),
    ("decode-draft", _bool, None, "let libjpeg decode large JPEGs at reduced scale (default off)"),
    ("reload-per-request", _bool, None, "rebuild the model for every batch: a deliberate bottleneck, the "
     "model-reload finding's scenario (default off)"),
    ("pinned", _bool, None, "page-locked host buffers for host-to-device copies (CUDA only)"),
    ("max-body-bytes", _positive(int), None, "largest request body accepted (default 20 MiB)"),
    ("max-pixels", _positive(int), None, "largest image accepted, in pixels (default 40M)"),
    ("top-k", _positive(int), None, "labels returned per image (default 5)"),
    ("spans-dir", str, None, "record stage spans into this directory (profiling on)"),
    ("framework-profile-dir", str, None, "ORT profiling (ort) or torch.profiler (torch backends) into this directory"),
    ("agent", _bool, None, "open the prof agent's Unix socket, so `prof attach` can switch stage spans and "
     "framework profiling on for a window (default on)"),
    ("access-log", _bool, None, "uvicorn access log (default off)"),
    ("log-level", str, ("critical", "error", "warning", "info", "debug"), "log level (default info)"),
)


def env_name(flag: str) -> str:
    return "PROF_" + flag.upper().replace("-", "_")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server knobs (each also read from PROF_<NAME> in the environment)")
    for flag, kind, choices, help_text in _OPTIONS:
        group.add_argument(f"--{flag}", type=kind, choices=choices, default=None,
                           help=f"{help_text} [env {env_name(flag)}]")


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> ServerConfig:
    """Flags, then ``PROF_*`` environment variables, then defaults. Raises ValueError on bad env."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    for flag, kind, choices, _ in _OPTIONS:
        name = flag.replace("-", "_")
        value = getattr(args, name, None)
        if value is None and env_name(flag) in env:
            raw = env[env_name(flag)]
            try:
                value = kind(raw)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ValueError(f"{env_name(flag)}={raw!r}: {exc}") from None
            if choices and value not in choices:
                raise ValueError(f"{env_name(flag)}={raw!r}: choose from {', '.join(choices)}")
        if value is not None:
            values[name] = value
    config = ServerConfig(**values)
    _check_combination(config)
    return config


def _check_combination(config: ServerConfig) -> None:
    if config.precision.startswith("int8") and config.backend != "ort":
        raise ValueError(f"--precision {config.precision} runs on --backend ort only")
    if config.precision == "fp16" and config.device != "cuda":
        raise ValueError("--precision fp16 is for --device cuda (CPU fp16 is slower than fp32)")
    if config.pinned and config.device != "cuda":
        raise ValueError("--pinned applies to host-to-device copies and needs --device cuda")
    if config.workers < 1 or config.cpu_threads < 1 or config.max_batch < 1 or config.top_k < 1:
        raise ValueError("--workers, --cpu-threads, --max-batch and --top-k must be at least 1")
