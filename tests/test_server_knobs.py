"""Knobs that change how the server works: batching, caches (LRU and a real Redis),
workers, and start-up failures."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import httpx
import numpy as np
import pytest

from samples import images
from samples.sample_server.process import ServerProcess, ServerStartError, free_port

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs


def classify(url: str, data: bytes) -> dict:
    response = httpx.post(f"{url}/classify", content=data, headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def distinct_images() -> list[bytes]:
    return [images.synthetic_encoded(100 + i, 400, 300) for i in range(12)]


def test_batched_results_equal_unbatched_ones(start_server, distinct_images) -> None:
    plain = start_server()
    batched = start_server("--max-batch", "8", "--max-wait-ms", "50")
    expected = [classify(plain.url, data) for data in distinct_images]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(distinct_images)) as pool:
        got = list(pool.map(lambda d: classify(batched.url, d), distinct_images))
    assert max(doc["batch_size"] for doc in got) > 1, "concurrent requests were never batched"
    for want, have in zip(expected, got):
        assert [e["index"] for e in have["top_k"]] == [e["index"] for e in want["top_k"]]
        np.testing.assert_allclose([e["score"] for e in have["top_k"]], [e["score"] for e in want["top_k"]],
                                   rtol=1e-4)


def test_lru_cache_answers_repeats_without_inference(start_server, jpeg_640) -> None:
    server = start_server("--cache", "lru", "--cache-size", "2")
    first, second = classify(server.url, jpeg_640), classify(server.url, jpeg_640)
    assert not first["cached"] and second["cached"]
    assert second["top_k"] == first["top_k"]
    assert "inference" not in second["timings_ms"]
    unique = images.make_unique(jpeg_640, "jpeg", 99)  # other bytes, same pixels: a different key
    assert not classify(server.url, unique)["cached"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'classify_cache_total{outcome="hit"} 1.0' in metrics
    assert 'classify_cache_total{outcome="miss"} 2.0' in metrics


def test_redis_cache_hits_are_shared_across_servers(start_server, redis_url) -> None:
    data = images.synthetic_encoded(555, 320, 240)
    a = start_server("--cache", redis_url)
    b = start_server("--cache", redis_url)
    assert not classify(a.url, data)["cached"]
    hit = classify(b.url, data)  # a different process: only Redis can know this answer
    assert hit["cached"]
    assert httpx.get(f"{b.url}/healthz").json()["cache"]["healthy"] is True


def test_redis_down_serves_uncached_and_says_so(start_server, jpeg_640) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = start_server("--cache", dead)
    for _ in range(2):
        assert classify(server.url, jpeg_640)["cached"] is False
    cache = httpx.get(f"{server.url}/healthz").json()["cache"]
    assert cache["healthy"] is False and cache["errors"] >= 1 and "Connection" in cache["last_error"]
    assert "redis cache at" in server.log_tail(50)


def test_two_uvicorn_workers_serve_and_aggregate_metrics(start_server, jpeg_640) -> None:
    server = start_server("--workers", "2")
    for _ in range(6):
        classify(server.url, jpeg_640)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'classify_requests_total{status="200"} 6.0' in metrics


def test_startup_failure_shows_the_reason_not_a_traceback(artifact_cache, tmp_path) -> None:
    server = ServerProcess(["--model", str(tmp_path / "missing.onnx")], log_path=tmp_path / "log",
                           env={"PROF_CACHE_DIR": str(artifact_cache.parent)}, ready_timeout_s=60)
    with pytest.raises(ServerStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "exited with code 2" in message and "model file not found" in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--precision", "int8-static", "--backend", "torch-eager"], "runs on --backend ort only"),
        (["--cache", "memcached"], "cache must be off, lru"),
        (["--max-batch", "0"], "must be at least 1"),
    ],
)
def test_bad_knobs_are_refused_in_one_line(args, expected) -> None:
    result = subprocess.run([sys.executable, "-m", "samples.sample_server", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_bad_knob_from_environment_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "samples.sample_server"], capture_output=True, text=True,
                            timeout=60, env={**__import__("os").environ, "PROF_MAX_BATCH": "lots"})
    assert result.returncode == 2 and "PROF_MAX_BATCH='lots'" in result.stderr


def test_busy_port_is_refused_before_loading_anything(start_server) -> None:
    server = start_server()
    result = subprocess.run([sys.executable, "-m", "samples.sample_server", "--port", str(server.port)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr


def test_redis_password_never_leaves_the_server() -> None:
    from samples.sample_server.cache import redact_url

    assert redact_url("redis://user:s3cret@cache.local:6380/2") == "redis://user:***@cache.local:6380/2"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
