"""Image -> model input, the way the scenario servers do it (and a slow way, for a fault)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def decode(data: bytes, size: int, draft: bool = False) -> Image.Image:
    """Decode an uploaded image to RGB. With ``draft`` a JPEG is decoded at a reduced
    scale (DCT scaling, 1/2 .. 1/8) no smaller than twice the model input."""
    image = Image.open(io.BytesIO(data))
    if draft and image.format == "JPEG":
        image.draft("RGB", (size * 2, size * 2))
    return image.convert("RGB")


def to_tensor(image: Image.Image, size: int) -> np.ndarray:
    """Resize (shorter side), centre crop and normalise: 1x3xSxS float32."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - MEAN) / STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def to_tensor_python(image: Image.Image, size: int) -> np.ndarray:
    """The same result computed pixel by pixel in Python (nearest-neighbour resize):
    what a port of a C++/Java reference implementation often looks like."""
    w, h = image.size
    scale = min(w, h) / size
    left = (w - size * scale) / 2
    top = (h - size * scale) / 2
    src = image.load()
    out = [[[0.0] * size for _ in range(size)] for _ in range(3)]
    mean = MEAN.tolist()
    std = STD.tolist()
    for y in range(size):
        sy = min(h - 1, int(top + (y + 0.5) * scale))
        for x in range(size):
            sx = min(w - 1, int(left + (x + 0.5) * scale))
            r, g, b = src[sx, sy]
            out[0][y][x] = (r / 255.0 - mean[0]) / std[0]
            out[1][y][x] = (g / 255.0 - mean[1]) / std[1]
            out[2][y][x] = (b / 255.0 - mean[2]) / std[2]
    return np.asarray(out, dtype=np.float32)[None]
