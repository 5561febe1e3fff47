"""Shared fixtures: a fresh artifact cache per test session, real sample servers on free
loopback ports, and a real redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from samples.images import synthetic_encoded
from samples.sample_server.process import ServerProcess, free_port


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh model cache for the whole run, so artifacts are really built by the tests."""
    path = tmp_path_factory.mktemp("prof-cache")
    previous = os.environ.get("PROF_CACHE_DIR")
    os.environ["PROF_CACHE_DIR"] = str(path)
    yield path / "models"
    if previous is None:
        os.environ.pop("PROF_CACHE_DIR", None)
    else:
        os.environ["PROF_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def start_server(artifact_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Factory: start a sample server with knobs; all are stopped at the end of the run."""
    started: list[ServerProcess] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(*knobs: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(list(knobs), env={"PROF_CACHE_DIR": str(artifact_cache.parent), **(env or {})},
                               log_path=logs / f"server-{len(started)}.log")
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def jpeg_640() -> bytes:
    return synthetic_encoded(11, 640, 480, "jpeg")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server on a free loopback port (Debian's redis-server must be installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run .ci/install (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
