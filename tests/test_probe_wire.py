"""The http probe on real servers over loopback: what it sees on the wire must equal what the
client sent and received — keep-alive, pipelining, chunked and multi-segment bodies, a
non-default port — and failures (no CAP_NET_RAW, buffer overrun, malformed traffic, a port
that closes) must be reported without losing the session."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from probes.http.probe import WireProbe, ingest_wire, problems_of
from profiler import load
from profiler.measures.wire import requests_of_samples, wire_requests, wire_stats
from samples.sample_server.process import free_port

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

SERVER = Path(__file__).with_name("wire_test_server.py")
PROF = [sys.executable, "-m", "profiler.cli"]


@pytest.fixture()
def plain_server():
    """The threaded http.server of wire_test_server.py on a free (non-default) port."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield process, port
    process.kill()
    process.wait()


def exchanges(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "exchanges.jsonl").read_text().splitlines()]


def raw_exchange(port: int, data: bytes, responses: int) -> bytes:
    """Send ``data`` on one connection, read until ``responses`` full JSON answers came back."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < responses or not received.endswith(b"}"):
            received += sock.recv(65536)
        return received


def test_wire_sees_what_the_client_sent_keep_alive_pipelined_chunked_and_large(plain_server, tmp_path) -> None:
    process, port = plain_server
    other_process_port = free_port()
    decoy = subprocess.Popen([sys.executable, str(SERVER), str(other_process_port)])  # not watched
    probe = WireProbe(process.pid, tmp_path / "http")
    probe.start()
    assert probe.watched == (port,)
    sent: list[tuple[str, bytes, int]] = []  # (request id, body, status)
    try:
        client = http.client.HTTPConnection("127.0.0.1", port)  # one keep-alive connection
        bodies = [b"a" * 10, os.urandom(300_000), b"a" * 10, os.urandom(5_000), b"a" * 10]
        for n, body in enumerate(bodies):
            client.request("POST", "/classify", body, {"X-Request-ID": f"ka-{n}", "Content-Type": "image/jpeg"})
            response = client.getresponse()
            response.read()
            sent.append((f"ka-{n}", body, response.status))
        client.request("GET", "/missing", headers={"X-Request-ID": "nf"})
        client.getresponse().read()
        sent.append(("nf", b"", 404))
        client.close()
        pipelined = b"".join(f"GET /p{n} HTTP/1.1\r\nHost: x\r\nX-Request-ID: pipe-{n}\r\n\r\n".encode() for n in range(3))
        raw_exchange(port, pipelined, responses=3)
        sent += [(f"pipe-{n}", b"", 200) for n in range(3)]
        chunked_body = os.urandom(70_000)
        chunks = b"".join(b"%x\r\n" % len(chunked_body[i:i + 9000]) + chunked_body[i:i + 9000] + b"\r\n"
                          for i in range(0, len(chunked_body), 9000)) + b"0\r\n\r\n"
        raw_exchange(port, b"POST /up HTTP/1.1\r\nHost: x\r\nX-Request-ID: chunked\r\nTransfer-Encoding: chunked"
                     b"\r\n\r\n" + chunks, responses=1)
        sent.append(("chunked", chunked_body, 200))
        decoy_client = http.client.HTTPConnection("127.0.0.1", other_process_port)
        decoy_client.request("GET", "/")
        decoy_client.getresponse().read()
        time.sleep(0.3)
    finally:
        stats = probe.stop()
        decoy.kill()
    seen = {e["request_id"]: e for e in exchanges(tmp_path / "http")}
    assert set(seen) == {rid for rid, _, _ in sent}  # every request, and none from the other port
    for rid, body, status in sent:
        record = seen[rid]
        assert record["status"] == status and record["request_bytes"] == len(body), rid
        assert record["body_sha256"] == hashlib.sha256(body).hexdigest(), rid
        assert record["start_ns"] <= record["request_end_ns"] <= record["response_start_ns"] <= record["end_ns"]
    assert seen["chunked"]["chunked"] and seen["ka-1"]["request_bytes"] == 300_000
    assert len({seen[f"ka-{n}"]["conn"] for n in range(5)}) == 1  # keep-alive: one connection
    assert len({seen[f"pipe-{n}"]["conn"] for n in range(3)}) == 1
    assert stats["drops"] == 0 and stats["exchanges"] == len(sent)
    events = ingest_wire(tmp_path / "http")
    assert len(events) == len(sent) and set(events["pid"]) == {process.pid}
    wire = wire_stats(events)
    assert wire.bodies == 6 and wire.duplicate_fraction == pytest.approx(2 / 6)  # the two repeats of b"a" * 10


def client_load(port: int, clients: int, per_client: int, duplicates: float) -> list[dict]:
    """Closed-loop keep-alive clients; each request's own record (as a load generator keeps)."""
    records: list[dict] = []
    lock = threading.Lock()
    shared = [os.urandom(20_000 + 1000 * i) for i in range(3)]

    def one_client(c: int) -> None:
        rng = np.random.default_rng(c)
        connection = http.client.HTTPConnection("127.0.0.1", port)
        for n in range(per_client):
            body = shared[n % 3] if rng.random() < duplicates else os.urandom(int(rng.integers(1_000, 90_000)))
            rid = f"c{c}-{n}"
            start = time.time_ns()
            connection.request("POST", "/classify", body, {"X-Request-ID": rid})
            response = connection.getresponse()
            answer = response.read()
            with lock:
                records.append({"id": rid, "start": start, "end": time.time_ns(), "bytes": len(body),
                                "sha": hashlib.sha256(body).hexdigest(), "status": response.status,
                                "received": len(answer)})
        connection.close()

    threads = [threading.Thread(target=one_client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def test_prof_attach_without_agent_reports_wire_figures_matching_the_clients_records(plain_server, tmp_path) -> None:
    process, port = plain_server
    out = tmp_path / "attach"
    attach = subprocess.Popen([*PROF, "attach", str(process.pid), "--duration", "6", "--out", str(out),
                               "--pyspy-rate", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 30
    while not (out / "raw" / "http" / "meta.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # py-spy and the capture are up
    spins = []
    for n in range(4):  # one at a time: py-spy samples of the handler belong to this request
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("GET", "/spin", headers={"X-Request-ID": f"spin-{n}"})
        connection.getresponse().read()
        connection.close()
        spins.append(f"spin-{n}")
    records = client_load(port, clients=4, per_client=25, duplicates=0.3)
    stdout, stderr = attach.communicate(timeout=120)
    assert attach.returncode == 0, stderr
    assert "wire" in stdout and "req/s" in stdout
    session = load(out)
    assert session.meta["probes"]["http"]["status"] == "on"
    assert session.meta["probes"]["stages"]["status"] == "off"  # no agent in this server
    requests = wire_requests(session.timeline)
    post = requests[requests["request_id"].str.startswith("c")].set_index("request_id")
    client = {r["id"]: r for r in records}
    assert set(post.index) == set(client)
    assert all(post.loc[rid, "request_bytes"] == r["bytes"] and post.loc[rid, "body_sha256"] == r["sha"]
               and post.loc[rid, "status"] == r["status"] and post.loc[rid, "response_bytes"] == r["received"]
               for rid, r in client.items())
    # wire latency sits inside the client's: it starts after the client's clock read, ends before
    client_ms = np.array([(r["end"] - r["start"]) / 1e6 for r in records])
    wire_ms = np.array([(post.loc[r["id"], "end_ns"] - post.loc[r["id"], "start_ns"]) / 1e6 for r in records])
    assert (wire_ms <= client_ms + 1.0).all()
    assert np.percentile(wire_ms, 50) == pytest.approx(np.percentile(client_ms, 50), rel=0.5, abs=3.0)
    stats = wire_stats(session.timeline[session.timeline["request_id"].astype(str).str.startswith("c")])
    assert stats.requests == len(records) and stats.statuses == {200: len(records)}
    client_dups = float(np.mean([r["sha"] in {x["sha"] for x in records if x["start"] < r["start"]}
                                 for r in records]))
    assert stats.duplicate_fraction == pytest.approx(client_dups)
    assert stats.request_bytes["p50"] == pytest.approx(np.percentile([r["bytes"] for r in records], 50))
    assert 1 <= stats.in_flight_max <= 4 and 0.5 < stats.in_flight_mean <= 4
    from profiler.analysis.attribution import attribute_samples

    pyspy = session.timeline[session.timeline["source"] == "pyspy"]
    served = requests_of_samples(session.timeline, busy=attribute_samples(pyspy, session.stacks) != "idle")
    samples = session.timeline.loc[served.index]
    spinning = samples["name"].astype(str).str.contains("spin_for")
    alone = served[spinning & served.isin(spins)]
    assert len(alone) >= 4  # one request at a time: tied by time alone
    spans = requests.set_index("request_id")
    middles = samples.loc[alone.index, "ts_ns"] + samples.loc[alone.index, "dur_ns"] // 2
    assert all(spans.loc[rid, "start_ns"] <= t <= spans.loc[rid, "end_ns"] for rid, t in zip(alone, middles))


def test_without_cap_net_raw_the_wire_probe_is_off_and_the_other_probes_go_on(plain_server, tmp_path) -> None:
    assert shutil.which("setpriv"), "util-linux setpriv drops CAP_NET_RAW for this test"
    process, _ = plain_server
    out = tmp_path / "attach"
    result = subprocess.run(["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", *PROF, "attach",
                             str(process.pid), "--duration", "2", "--out", str(out)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    probes = load(out).meta["probes"]
    assert probes["http"]["status"] == "off" and "CAP_NET_RAW" in probes["http"]["reason"]
    assert probes["pyspy"]["status"] == "on" and probes["proc"]["status"] == "on"
    assert "CAP_NET_RAW" in result.stdout  # said on screen too


def test_overrun_malformed_burst_and_closed_port_are_reported_and_nothing_is_lost(plain_server, tmp_path) -> None:
    process, port = plain_server
    probe = WireProbe(process.pid, tmp_path / "http")
    probe.receive_buffer, probe.refresh_s = 64 << 10, 0.5
    probe.start()
    try:
        first = http.client.HTTPConnection("127.0.0.1", port)
        first.request("POST", "/classify", b"before", {"X-Request-ID": "before"})
        first.getresponse().read()
        time.sleep(0.5)
        os.kill(probe.process.pid, signal.SIGSTOP)  # the capture stalls: the kernel buffer overflows
        client_load(port, clients=2, per_client=20, duplicates=0.0)
        os.kill(probe.process.pid, signal.SIGCONT)
        time.sleep(0.5)  # it drains what the buffer kept
        for _ in range(5):  # malformed traffic, each on its own connection
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n")
                sock.recv(4096)
        first.request("GET", "/close-listener", headers={"X-Request-ID": "closing"})
        first.getresponse().read()
        time.sleep(1.2)  # the capture re-reads the listening ports (every 0.5 s here)
        first.request("POST", "/classify", b"after", {"X-Request-ID": "after"})  # kept-alive connection lives on
        first.getresponse().read()
        time.sleep(0.3)
    finally:
        stats = probe.stop()
    assert stats["drops"] > 0 and stats["malformed_requests"] >= 5
    assert {"port": port, "event": "closed"}.items() <= stats["port_events"][0].items()
    notes = " ".join(problems_of(stats))
    assert "dropped" in notes and "malformed" in notes and f"port {port} closed" in notes
    seen = {e["request_id"]: e for e in exchanges(tmp_path / "http")}
    assert {"before", "closing", "after"} <= set(seen)
    assert sum(e["outcome"] == "malformed" for e in seen.values()) >= 5
    # http.server answers a request line it cannot read without a status line (HTTP/0.9
    # style), so those answers are malformed too: the requests are kept without a status
    assert stats["malformed_responses"] >= 5


def test_prof_run_a_command_with_url_sees_every_load_generator_request_on_the_wire(tmp_path) -> None:
    port = free_port()
    out = tmp_path / "cmd"
    result = subprocess.run([*PROF, "run", "--duration", "3", "--warmup", "0.5", "--concurrency", "3",
                             "--duplicates", "0.5", "--url", f"http://127.0.0.1:{port}/classify", "--out", str(out),
                             "--", sys.executable, str(SERVER), str(port)], capture_output=True, text=True,
                            timeout=180, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr + result.stdout
    tl = load(out).timeline
    client = tl[tl["source"] == "loadgen"]
    wire = wire_requests(tl).set_index("request_id")
    assert len(client) > 20 and set(wire.index) == set(client["request_id"].astype(str))
    sent = client.set_index(client["request_id"].astype(str))["args"].map(json.loads)
    assert all(wire.loc[rid, "request_bytes"] == args["bytes_sent"] and wire.loc[rid, "body_sha256"] == args["sha256"]
               for rid, args in sent.items())
    client_repeats = float(np.mean([args["duplicate"] for args in sent.values]))
    assert wire_stats(tl).duplicate_fraction == pytest.approx(client_repeats)
