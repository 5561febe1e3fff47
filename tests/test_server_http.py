"""The sample server under real uvicorn on loopback, driven over real HTTP."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json

import httpx
import msgpack
import numpy as np
import pytest
from PIL import Image

from probes.stages import STAGE_NAMES, read_span_file
from samples import images

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

ALL_STAGES = {"receive", "deserialize", "decode", "preprocess", "queue", "h2d", "inference", "d2h",
              "postprocess", "serialize"}


@pytest.fixture(scope="module")
def server(start_server, tmp_path_factory):
    spans = tmp_path_factory.mktemp("spans")
    srv = start_server("--max-body-bytes", "2000000", "--max-pixels", "20000000", "--spans-dir", str(spans))
    srv.spans_dir = spans
    return srv


def post(url: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/classify", content=body, headers={"Content-Type": content_type, **headers},
                      timeout=30)


def multipart_post(url: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/classify", files={"file": ("x.jpg", data, "image/jpeg")}, timeout=30)


def top_labels(document: dict) -> list[int]:
    return [entry["index"] for entry in document["top_k"]]


def test_every_payload_format_gives_the_same_answer(server, jpeg_640) -> None:
    raw = post(server.url, jpeg_640, "image/jpeg")
    b64 = post(server.url, json.dumps({"image": base64.b64encode(jpeg_640).decode()}).encode(), "application/json")
    packed = post(server.url, msgpack.packb({"image": jpeg_640}), "application/msgpack")
    multi = multipart_post(server.url, jpeg_640)
    docs = []
    for response, wire in ((raw, "raw"), (b64, "json"), (packed, "msgpack"), (multi, "multipart")):
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["payload"] == wire
        docs.append(doc)
    assert len({tuple(top_labels(d)) for d in docs}) == 1
    scores = [[e["score"] for e in d["top_k"]] for d in docs]
    np.testing.assert_allclose(scores[1:], [scores[0]] * 3, rtol=1e-6)
    assert len(docs[0]["top_k"]) == 5 and docs[0]["top_k"][0]["label"] == f"class_{docs[0]['top_k'][0]['index']:04d}"
    # The response cannot hold its own serialization time; that stage is in the spans only.
    assert set(docs[0]["timings_ms"]) == ALL_STAGES - {"serialize"}


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_png_and_webp_are_classified(server, fmt) -> None:
    data = images.synthetic_encoded(21, 300, 300, fmt)
    response = post(server.url, data, f"image/{fmt}")
    assert response.status_code == 200 and len(response.json()["top_k"]) == 5


def test_msgpack_response_and_request_id_echo(server, jpeg_640) -> None:
    response = post(server.url, jpeg_640, "image/jpeg", Accept="application/msgpack", **{"X-Request-ID": "my-id-7"})
    assert response.headers["content-type"] == "application/msgpack"
    assert response.headers["x-request-id"] == "my-id-7"
    doc = msgpack.unpackb(response.content, raw=False)
    assert doc["request_id"] == "my-id-7" and len(doc["top_k"]) == 5
    generated = post(server.url, jpeg_640, "image/jpeg")
    assert generated.headers["x-request-id"] and generated.headers["x-request-id"] != "my-id-7"


def _bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 5000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_INPUTS = [
    ("zero-byte", b"", "image/jpeg", 400, "empty"),
    ("truncated", images.synthetic_encoded(5, 640, 480)[:3000], "image/jpeg", 400, "undecodable"),
    ("non-image", b"hello, I am text" * 10, "image/jpeg", 400, "not_an_image"),
    ("wrong-content-type", b"{}", "text/plain", 415, "unsupported_content_type"),
    ("bad-json", b"{not json", "application/json", 400, "bad_json"),
    ("bad-base64", b'{"image": "***"}', "application/json", 400, "bad_base64"),
    ("bad-msgpack", b"\xc1", "application/msgpack", 400, "bad_msgpack"),
    ("over-size-limit", b"\xff\xd8\xff" + bytes(2_100_000), "image/jpeg", 413, "body_too_large"),
    ("pixel-bomb", _bomb_png(), "image/png", 413, "too_many_pixels"),
]


def test_bad_inputs_are_answered_while_good_requests_still_succeed(server, jpeg_640) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        good = [pool.submit(post, server.url, jpeg_640, "image/jpeg") for _ in range(4)]
        bad = {name: pool.submit(post, server.url, body, ctype) for name, body, ctype, _, _ in BAD_INPUTS}
        for name, _, _, status, reason in BAD_INPUTS:
            response = bad[name].result()
            assert response.status_code == status, (name, response.text)
            assert response.json()["error"] == reason, name
            assert response.headers["x-request-id"]
        assert all(f.result().status_code == 200 for f in good)
    metrics = httpx.get(f"{server.url}/metrics").text
    for _, _, _, _, reason in BAD_INPUTS:
        assert f'classify_rejected_total{{reason="{reason}"}}' in metrics, reason
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"


def test_chunked_body_over_the_limit_is_refused(server) -> None:
    def chunks():
        for _ in range(30):
            yield b"\xff" * 100_000

    response = httpx.post(f"{server.url}/classify", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 413


def test_healthz_and_prometheus_metrics(server, jpeg_640) -> None:
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["engine"]["providers"] == ["CPUExecutionProvider"]
    assert health["profiling"]["spans"] is True
    before = httpx.get(f"{server.url}/metrics").text
    post(server.url, jpeg_640, "image/jpeg")
    after = httpx.get(f"{server.url}/metrics").text
    count = lambda text: float(next(line.split()[-1] for line in text.splitlines()  # noqa: E731
                                    if line.startswith('classify_requests_total{status="200"}')))
    assert count(after) == count(before) + 1
    assert 'classify_stage_seconds_bucket{le="0.05",stage="inference"}' in after


def test_stage_spans_follow_each_request_into_its_batch(start_server, tmp_path, jpeg_640) -> None:
    server = start_server("--spans-dir", str(tmp_path), "--max-batch", "4", "--max-wait-ms", "20")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        ids = [f"trace-{i}" for i in range(8)]
        responses = list(pool.map(lambda rid: post(server.url, jpeg_640, "image/jpeg", **{"X-Request-ID": rid}), ids))
    assert all(r.status_code == 200 for r in responses)
    server.stop()  # spans are flushed at shutdown
    files = sorted(tmp_path.glob("spans-*.npz"))
    assert files, "no span file written"
    spans = read_span_file(files[0])
    stage_names = [STAGE_NAMES[s] for s in spans.columns["stage"]]
    assert stage_names.count("model_load") == 1
    per_request = {}
    for name, req, batch in zip(stage_names, spans.columns["request"], spans.columns["batch"]):
        if req >= 0:
            per_request.setdefault(str(spans.request_ids[req]), []).append((name, int(batch)))
    assert set(ids) <= set(per_request)
    for rid in ids:
        names = [n for n, _ in per_request[rid]]
        assert {"receive", "deserialize", "decode", "preprocess", "queue", "postprocess", "serialize"} <= set(names)
        batches = {b for _, b in per_request[rid] if b >= 0}
        assert len(batches) == 1  # every span of a request names the same batch
        batch = batches.pop()
        batch_stages = {STAGE_NAMES[s] for s, r, b in zip(spans.columns["stage"], spans.columns["request"],
                                                          spans.columns["batch"]) if r < 0 and b == batch}
        assert batch_stages == {"h2d", "inference", "d2h"}
    sizes = {int(r.headers["x-batch-id"]) for r in responses}
    assert len(sizes) < len(ids)  # some requests really shared a batch
