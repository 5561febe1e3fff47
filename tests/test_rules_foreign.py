"""Rules that only evidence from outside can judge, on a server prof did not write (no
agent, no stage spans): `prof attach` with py-spy, psutil and the wire, then the report.
Each bottleneck has a run that shows it and a clean run of the same server that must not."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from profiler.analysis.diagnose import diagnose
from profiler.session import load
from samples.sample_server.process import free_port

SERVER = Path(__file__).with_name("foreign_server.py")
PROF = [sys.executable, "-m", "profiler.cli"]


def drive(port: int, mode: str, seconds: float, clients: int) -> int:
    deadline = time.monotonic() + seconds
    done = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            image = os.urandom(60_000)  # every body new
            body = json.dumps({"image": base64.b64encode(image).decode()}).encode() if mode == "json" else image
            connection.request("POST", "/classify", body, {"Content-Type": "application/json"})
            connection.getresponse().read()
            done.append(1)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(done)


@pytest.fixture(scope="module")
def findings_of(tmp_path_factory):
    made: dict[str, dict] = {}

    def get(mode: str) -> dict:
        if mode in made:
            return made[mode]
        port = free_port()
        server = subprocess.Popen([sys.executable, str(SERVER), str(port), mode])
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            out = tmp_path_factory.mktemp(mode) / "session"
            attach = subprocess.Popen([*PROF, "attach", str(server.pid), "--duration", "7", "--out", str(out),
                                       "--pyspy-rate", "50", "--quiet"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            time.sleep(1.5)
            assert drive(port, mode, 5.0, clients=4) > 10
            _, stderr = attach.communicate(timeout=120)
            assert attach.returncode == 0, stderr
        finally:
            server.kill()
            server.wait()
        report = diagnose(load(out))
        assert report.load["source"] == "http" and report.load["stage_basis"] == "py-spy attribution"
        made[mode] = {f.rule: f for f in report.findings}
        return made[mode]

    return get


def test_serialization_overhead_from_py_spy_frames_of_json_and_base64(findings_of) -> None:
    finding = findings_of("json")["serialization-overhead"]
    assert finding.evidence["share"] >= 0.20
    assert finding.evidence["deserialize_share"] > 0.02 and finding.evidence["serialize_share"] > 0.02
    assert "serialization-overhead" not in findings_of("clean")


def test_gil_contention_when_python_threads_outnumber_the_cores_they_get(findings_of) -> None:
    finding = findings_of("gil")["gil-contention"]
    assert finding.evidence["busy_threads_mean"] >= 1.5 and finding.evidence["cores_used"] <= 1.3
    assert "gil-contention" not in findings_of("clean")


def test_latency_outliers_from_wire_latencies(findings_of) -> None:
    finding = findings_of("stalls")["latency-outliers"]
    assert finding.evidence["p99_ms"] > 3 * finding.evidence["p50_ms"]
    assert "latency-outliers" not in findings_of("clean")
