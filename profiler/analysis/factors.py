"""Factors measured on this host when a gain needs one that the model calibration does not
hold: how much a reduced-scale JPEG decode (libjpeg's DCT scaling, Pillow's ``draft``) saves
on decode and on the resize after it, for the image size whose full decode time matches
what the session measured per request."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from samples.images import synthetic_encoded

_SIZES = ((1280, 720), (1920, 1080), (3000, 2000), (4000, 3000))
_TARGET = 256


@dataclass(frozen=True)
class DraftFactor:
    width: int
    height: int
    full_decode_ms: float
    draft_decode_ms: float
    full_resize_ms: float
    draft_resize_ms: float

    @property
    def decode_saving(self) -> float:
        return max(0.0, 1.0 - self.draft_decode_ms / self.full_decode_ms)

    @property
    def resize_saving(self) -> float:
        return max(0.0, 1.0 - self.draft_resize_ms / self.full_resize_ms) if self.full_resize_ms > 0 else 0.0


def _median_ms(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def _decode(data: bytes, draft: bool) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if draft:
        image.draft("RGB", (_TARGET, _TARGET))
    image.load()
    return image


def _resize(image: Image.Image) -> None:
    image.resize((224, 224), Image.Resampling.BILINEAR, reducing_gap=None)


@lru_cache(maxsize=8)
def draft_factor(decode_ms_per_request: float) -> DraftFactor:
    """Full vs draft decode (and the resize after it) for the generated JPEG whose full
    decode time on this host is closest to ``decode_ms_per_request``."""
    best = None
    for width, height in _SIZES:
        data = synthetic_encoded(7, width, height, "jpeg")
        full_ms = _median_ms(lambda: _decode(data, False), repeats=3)
        if best is None or abs(full_ms - decode_ms_per_request) < abs(best[2] - decode_ms_per_request):
            best = (width, height, full_ms, data)
        if full_ms > decode_ms_per_request * 2:
            break
    width, height, full_ms, data = best
    full, reduced = _decode(data, False), _decode(data, True)
    return DraftFactor(width, height, full_ms, _median_ms(lambda: _decode(data, True)),
                       _median_ms(lambda: _resize(full)), _median_ms(lambda: _resize(reduced)))


@lru_cache(maxsize=8)
def draft_factor_for(width: int, height: int) -> DraftFactor:
    """Full vs draft decode (and the resize after it) for a generated JPEG of the size the
    requests' images had (the wire probe read it from their headers)."""
    data = synthetic_encoded(7, width, height, "jpeg")
    full, reduced = _decode(data, False), _decode(data, True)
    return DraftFactor(width, height, _median_ms(lambda: _decode(data, False), repeats=3),
                       _median_ms(lambda: _decode(data, True)), _median_ms(lambda: _resize(full)),
                       _median_ms(lambda: _resize(reduced)))


_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_INV_STD = 1.0 / np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _reference_preprocess(image: Image.Image, size: int = 224) -> np.ndarray:
    """Resize (shorter side, Pillow's reducing pass first), centre-crop, one float pass."""
    w, h = image.size
    scale = size / min(w, h)
    resized = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR,
                           reducing_gap=2.0)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    x = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32)
    x *= 1.0 / 255.0
    x -= _MEAN
    x *= _INV_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


@lru_cache(maxsize=8)
def preprocess_reference_ms(width: int, height: int) -> float:
    """What resize, crop and normalise to a 224-pixel model input cost on this host, one
    thread, for a decoded image of this size: the preprocessing a fix can reach."""
    image = Image.open(io.BytesIO(synthetic_encoded(7, width, height, "jpeg"))).convert("RGB")
    _reference_preprocess(image)  # warm
    return _median_ms(lambda: _reference_preprocess(image), repeats=7)
