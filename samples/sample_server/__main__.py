"""``python -m samples.sample_server`` (also ``prof serve``): run the reference server."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile

from samples.sample_server.config import ENV_CONFIG, ServerConfig, add_server_arguments, config_from_args

EXAMPLES = """examples:
  prof serve                                   ORT fp32 on 127.0.0.1:8000
  prof serve --max-batch 16 --max-wait-ms 4    dynamic batching
  prof serve --precision int8-static           INT8 (QDQ) model on ONNX Runtime
  prof serve --backend torch-eager --cache lru
  PROF_CACHE=redis://127.0.0.1:6379/0 prof serve
  curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/classify
"""


def build_parser(prog: str = "python -m samples.sample_server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve the reference ResNet-18 image classifier (FastAPI + uvicorn).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(parser)
    return parser


def check_bindable(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve(config: ServerConfig) -> int:
    import uvicorn

    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_bindable(config.host, config.port)
    os.environ[ENV_CONFIG] = config.to_json()
    metrics_dir = None
    if config.workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="prof-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("samples.sample_server.app:create_app", factory=True, host=config.host, port=config.port,
                    workers=config.workers, log_level=config.log_level, access_log=config.access_log,
                    timeout_graceful_shutdown=5)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m samples.sample_server") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        config = config_from_args(args)
        return serve(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
