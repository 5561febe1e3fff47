"""Deterministic generated images: the only image source we have (no dataset downloads).

Images have smooth gradients, a few shapes and mild noise so that JPEG/PNG sizes and
decode times resemble photographs more than flat test patterns do. ``make_unique``
makes byte-distinct copies of an encoded image without re-encoding (a JPEG comment
segment or a PNG text chunk), so a load generator can control its exact-duplicate
fraction at almost no CPU cost.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

ImageFormat = Literal["jpeg", "png", "webp"]
FORMATS: tuple[ImageFormat, ...] = ("jpeg", "png", "webp")
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def synthetic_image(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
        channels.append(127.5 + 90.0 * wave)
    pixels = np.stack(channels, axis=-1) + rng.normal(0.0, 6.0, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
        y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=color)
    return image


def encode_image(image: Image.Image, fmt: ImageFormat = "jpeg", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt in ("jpeg", "webp") else {"compress_level": 6}
    image.save(buffer, format=_PIL_FORMAT[fmt], **options)
    return buffer.getvalue()


def synthetic_encoded(seed: int, width: int, height: int, fmt: ImageFormat = "jpeg") -> bytes:
    return encode_image(synthetic_image(seed, width, height), fmt)


def make_unique(data: bytes, fmt: ImageFormat, tag: int) -> bytes:
    """Return ``data`` with an embedded tag that changes its bytes but not its pixels."""
    text = f"prof-unique-{tag}".encode()
    if fmt == "jpeg":
        if data[:2] != b"\xff\xd8":
            raise ValueError("not a JPEG stream")
        segment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
        return data[:2] + segment + data[2:]
    if fmt == "png":
        iend = data.rfind(b"IEND") - 4
        if iend < 8:
            raise ValueError("not a PNG stream")
        body = b"tEXt" + b"Comment\x00" + text
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        return data[:iend] + chunk + data[iend:]
    raise ValueError(f"make_unique does not support {fmt}: generate a distinct image instead")


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '640x480' -> (640, 480)."""
    if "x" in text:
        width, height = text.lower().split("x", 1)
        return int(width), int(height)
    side = int(text)
    return side, side
