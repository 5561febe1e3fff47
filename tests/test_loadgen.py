from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import psutil
import pytest
from starlette.datastructures import Headers

from samples.loadgen.runner import LoadRunner, LoadSpec
from samples.loadgen.summary import summarize
from samples.loadgen.workload import PAYLOADS, ImageMix, encode_payload
from samples.sample_server.payload import extract_image

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


def test_duplicate_fraction_and_determinism() -> None:
    mix = ImageMix(["64"], ["jpeg", "png"], duplicates=0.3, seed=4)
    items = [mix.next() for _ in range(2000)]
    share = sum(i.duplicate for i in items) / len(items)
    assert 0.26 < share < 0.34
    # every "unique" item really is unseen, and every duplicate really was sent before
    seen: set[str] = set()
    for item in items:
        assert (item.sha256 in seen) == item.duplicate
        seen.add(item.sha256)
    again = ImageMix(["64"], ["jpeg", "png"], duplicates=0.3, seed=4)
    assert [again.next().sha256 for _ in range(50)] == [i.sha256 for i in items[:50]]
    assert Counter(i.fmt for i in items if not i.duplicate).keys() == {"jpeg", "png"}


@pytest.mark.parametrize("kind", PAYLOADS)
def test_each_payload_format_round_trips_through_the_server_parser(kind) -> None:
    item = ImageMix(["48"], ["jpeg"], 0.0).next()
    payload = encode_payload(item, kind)
    image, wire = asyncio.run(extract_image(payload.body, Headers(payload.headers), 10_000_000))
    assert image == item.data and wire == kind


def test_closed_loop_against_the_real_server_records_every_request(start_server) -> None:
    server = start_server()
    spec = LoadSpec(url=f"{server.url}/classify", concurrency=3, duration_s=None, requests=24, warmup_s=0.5)
    runner = LoadRunner(spec, ImageMix(["320x240"], ["jpeg"], duplicates=0.25, seed=2))
    state = asyncio.run(runner.run())
    measured = state.measured()
    assert len(measured) >= 24 and all(r.status == 200 for r in measured)
    assert len({r.request_id for r in state.records}) == len(state.records)
    assert all(r.server_ms.get("inference", 0) > 0 for r in measured)
    summary = summarize(state.records)
    assert summary.ok == len(measured) and summary.throughput_rps > 0
    assert 0 < summary.p50_ms <= summary.p95_ms <= summary.p99_ms


def test_open_loop_keeps_its_arrival_rate(start_server) -> None:
    server = start_server()
    spec = LoadSpec(url=f"{server.url}/classify", rate=10, duration_s=4, warmup_s=0)
    state = asyncio.run(LoadRunner(spec, ImageMix(["224"], ["jpeg"], 0.0)).run())
    assert 20 <= len(state.records) <= 60  # Poisson(40) lies here with overwhelming probability


def test_prof_load_cli_writes_records_and_prints_percentiles(start_server, tmp_path) -> None:
    server = start_server()
    records = tmp_path / "records.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "load", f"{server.url}/classify", "-n", "10", "-c", "2",
         "--warmup", "0", "--payload", "msgpack", "--accept", "msgpack", "--records", str(records), "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "p50 / p95 / p99" in result.stdout and "req/s" in result.stdout
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) >= 10 and all(line["status"] == 200 for line in lines)


def test_prof_load_refuses_bad_options_in_one_line(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "profiler.cli", "load", "http://127.0.0.1:9/classify",
                             "--formats", "bmp"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown image format" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_ctrl_c_during_prof_load_keeps_records_and_stops_the_server(artifact_cache, tmp_path) -> None:
    records = tmp_path / "records.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "profiler.cli", "load", "--duration", "60", "--warmup", "0", "-c", "2",
         "--records", str(records)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PROF_CACHE_DIR": str(artifact_cache.parent), "COLUMNS": "200"})
    server_pid = None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        match = re.search(r"sample server pid (\d+)", line)
        if match:
            server_pid = int(match.group(1))
            break
        assert time.monotonic() < deadline
    assert server_pid is not None
    time.sleep(4)  # some requests complete
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert len(records.read_text().splitlines()) > 0
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [(b"[" + b"[]," * 10_000 + b"[]]", "application/json", "bad_json"),
     (__import__("msgpack").packb([[]] * 10_000), "application/msgpack", "bad_msgpack")],
    ids=["json-containers", "msgpack-containers"],
)
def test_container_heavy_bodies_are_refused_unexpanded(body, content_type, reason) -> None:
    from samples.sample_server.payload import PayloadError

    with pytest.raises(PayloadError) as caught:
        asyncio.run(extract_image(body, Headers({"content-type": content_type}), 20_000_000))
    assert caught.value.reason == reason and caught.value.status == 400
