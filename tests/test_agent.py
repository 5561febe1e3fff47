"""The in-process agent: a 0600 Unix socket in a private directory, JSON lines, windows of
stage spans and framework profiling switched on in a real sample server."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import httpx
import pytest

from probes import agent
from probes.stages import read_span_file

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


def test_socket_is_private_and_speaks_json_lines(tmp_path) -> None:
    code = ("import probes.agent, time, sys; a = probes.agent.install(); print(a.path, flush=True); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        path = child.stdout.readline().strip()
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert path.endswith(f"agent-{child.pid}.sock")
        client = agent.find_agent(child.pid)
        assert client is not None
        hello = client.request("hello")
        assert hello["pid"] == child.pid and hello["capabilities"] == []
        assert any(t["name"] == "MainThread" and t["native_id"] == child.pid for t in hello["threads"])
        with pytest.raises(agent.AgentError, match="absolute path"):
            client.request("start", out_dir="relative/dir")
        with pytest.raises(agent.AgentError, match="unknown command"):
            client.request("format-disk")
        client.close()
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(path)
        raw.sendall(b"not json\n")
        assert json.loads(raw.makefile().readline()) == {"ok": False,
                                                         "error": "requests are one JSON object per line"}
        raw.close()
    finally:
        child.terminate()
        child.wait(10)
    assert agent.find_agent(child.pid) is None


def test_no_agent_means_none() -> None:
    assert agent.find_agent(os.getpid()) is None


def test_window_switches_spans_and_ort_profiling_in_the_sample_server(start_server, jpeg_640, tmp_path) -> None:
    server = start_server("--backend", "ort")
    client = agent.find_agent(server.pid)
    assert client is not None, "the sample server installs the agent"
    assert set(client.request("hello")["capabilities"]) == {"stages", "framework"}
    assert httpx.get(f"{server.url}/healthz").json()["profiling"]["spans"] is False
    answer = client.request("start", out_dir=str(tmp_path), probes=["stages", "framework"])
    assert set(answer["started"]) == {"stages", "framework"}
    with pytest.raises(agent.AgentError, match="window is open"):
        client.request("start", out_dir=str(tmp_path), probes=["stages"])
    for _ in range(5):
        response = httpx.post(f"{server.url}/classify", content=jpeg_640, headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200
    files = client.request("stop")["files"]
    spans = [f for f in files if f.endswith(".npz")]
    profiles = [f for f in files if "/ort/" in f and f.endswith(".json")]
    assert spans and profiles, files
    total = sum(len(read_span_file(f)) for f in spans)
    assert total >= 5 * 8  # receive ... serialize for each request, plus batch spans
    nodes = [json.loads(line.rstrip(",\n")) for line in open(profiles[0]) if '"cat" : "Node"' in line
             or '"cat":"Node"' in line]
    assert nodes, "per-node ORT events were recorded in the window"
    # after the window: serving goes on unprofiled
    time.sleep(0.1)
    assert httpx.post(f"{server.url}/classify", content=jpeg_640,
                      headers={"Content-Type": "image/jpeg"}).status_code == 200
    assert httpx.get(f"{server.url}/healthz").json()["profiling"]["spans"] is False
    client.close()
