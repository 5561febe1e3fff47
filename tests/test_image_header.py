"""The wire probe reads an uploaded image's format and pixel size from its header alone."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from probes.http.flow import FlowCounters, HttpConnection
from probes.http.image_header import PREFIX_MAX, ImageSniffer, image_size
from samples.images import make_unique, synthetic_encoded


def _jpeg_with_exif(width: int, height: int, progressive: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (120, 30, 200))
    exif = Image.Exif()
    exif[0x010E] = "x" * 20000  # ImageDescription: a large APP1 segment before the frame header
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), progressive=progressive, quality=80)
    return out.getvalue()


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "PNG")
    return out.getvalue()


def _fed(body: bytes, chunk: int) -> tuple[str, int, int] | None:
    sniffer = ImageSniffer()
    for start in range(0, len(body), chunk):
        sniffer.feed(body[start:start + chunk])
        if sniffer.done:
            break
    return sniffer.result


@pytest.mark.parametrize("chunk", [1460, 65536])
def test_raw_jpeg_png_multipart_and_base64_json_bodies(chunk):
    jpeg = make_unique(synthetic_encoded(3, 1280, 720, "jpeg"), "jpeg", 7)
    assert _fed(jpeg, chunk) == ("jpeg", 1280, 720)
    assert _fed(_jpeg_with_exif(333, 517, progressive=True), chunk) == ("jpeg", 333, 517)
    assert _fed(_png(97, 45), chunk) == ("png", 97, 45)
    multipart = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
                 b"Content-Type: image/jpeg\r\n\r\n" + _jpeg_with_exif(640, 480) + b"\r\n--b0undary--\r\n")
    assert _fed(multipart, chunk) == ("jpeg", 640, 480)
    document = json.dumps({"request_id": "r1", "image": base64.b64encode(_jpeg_with_exif(800, 600)).decode()})
    assert _fed(document.encode(), chunk) == ("jpeg", 800, 600)
    png_document = json.dumps({"image": base64.b64encode(_png(31, 29)).decode()})
    assert _fed(png_document.encode(), chunk) == ("png", 31, 29)


def test_bodies_without_a_readable_image_give_nothing_and_hold_no_more_than_the_cap():
    assert _fed(json.dumps({"text": "a" * 20000}).encode(), 1460) is None
    assert _fed(b"\xff\xd8\xff\xda" + b"\x00" * 50000, 1460) is None  # scan data before any frame header
    truncated = _jpeg_with_exif(640, 480)[:2000]  # the frame header never arrives
    assert image_size(truncated) is None  # more bytes could still tell
    assert _fed(truncated, 1460) is None
    sniffer = ImageSniffer()
    sniffer.feed(b"\xff\xd8\xff\xe1\xff\xff" + b"\x00" * (PREFIX_MAX * 2))  # an endless segment
    assert sniffer.done and sniffer.result is None


def test_the_exchange_record_carries_the_image_size():
    lines: list[dict] = []
    connection = HttpConnection(1, "127.0.0.1:5000", 8000, FlowCounters(), lambda e: lines.append(e.record()),
                                from_start=True)
    body = synthetic_encoded(1, 4000, 3000, "jpeg")
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}"
            "\r\n\r\n").encode()
    connection.client_data(head + body, 1_000)
    connection.server_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 2_000)
    assert [line["image"] for line in lines] == [["jpeg", 4000, 3000]]
