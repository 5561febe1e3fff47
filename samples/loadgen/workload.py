"""What the load generator sends: an image mix and a payload format.

The mix is deterministic for a seed. Each request is either an exact repeat of an earlier
request's bytes (with probability ``duplicates``; drawn from the last 4096 unique images) or
bytes never sent before; JPEG and PNG
are made unique without re-encoding (:func:`samples.images.make_unique`), WebP by drawing
from a pool of distinct encodings, which repeats once the pool is spent (the run reports the
duplicate fraction it actually sent).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Literal

import msgpack

from samples import images

PayloadFormat = Literal["raw", "multipart", "json", "msgpack"]
PAYLOADS: tuple[PayloadFormat, ...] = ("raw", "multipart", "json", "msgpack")
_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_BASES_PER_KIND = 4
_WEBP_POOL = 64
_REPEAT_POOL = 4096  # repeats are drawn from the most recent unique images: bounded memory


@dataclass(frozen=True)
class ImageItem:
    data: bytes
    fmt: images.ImageFormat
    size: str
    sha256: str
    duplicate: bool


@dataclass(frozen=True)
class Payload:
    body: bytes
    headers: dict[str, str]


class ImageMix:
    def __init__(self, sizes: list[str], formats: list[images.ImageFormat], duplicates: float, seed: int = 0):
        if not 0.0 <= duplicates <= 1.0:
            raise ValueError("duplicates must be a fraction between 0 and 1")
        if not sizes or not formats:
            raise ValueError("need at least one image size and one format")
        self.duplicates = duplicates
        self._rng = random.Random(seed)
        self._kinds = [(size, fmt) for size in sizes for fmt in formats]
        self._bases: dict[tuple[str, str], list[bytes]] = {}
        for k, (size, fmt) in enumerate(self._kinds):
            width, height = images.parse_size(size)
            count = _WEBP_POOL if fmt == "webp" else _BASES_PER_KIND
            self._bases[(size, fmt)] = [
                images.synthetic_encoded(seed * 100_003 + k * 1_009 + i, width, height, fmt) for i in range(count)
            ]
        self._sent: deque[ImageItem] = deque(maxlen=_REPEAT_POOL)
        self._counter = 0

    def next(self) -> ImageItem:
        if self._sent and self._rng.random() < self.duplicates:
            earlier = self._rng.choice(self._sent)
            return ImageItem(earlier.data, earlier.fmt, earlier.size, earlier.sha256, True)
        self._counter += 1
        size, fmt = self._kinds[self._counter % len(self._kinds)]
        bases = self._bases[(size, fmt)]
        if fmt == "webp":
            data = bases[self._counter // len(self._kinds) % len(bases)]
        else:
            data = images.make_unique(bases[self._counter % len(bases)], fmt, self._counter)
        item = ImageItem(data, fmt, size, hashlib.sha256(data).hexdigest(), False)
        self._sent.append(item)
        return item


def encode_payload(item: ImageItem, kind: PayloadFormat, accept_msgpack: bool = False) -> Payload:
    headers = {"Accept": "application/msgpack" if accept_msgpack else "application/json"}
    if kind == "raw":
        return Payload(item.data, {**headers, "Content-Type": _CONTENT_TYPES[item.fmt]})
    if kind == "json":
        body = json.dumps({"image": base64.b64encode(item.data).decode()}).encode()
        return Payload(body, {**headers, "Content-Type": "application/json"})
    if kind == "msgpack":
        return Payload(msgpack.packb({"image": item.data}), {**headers, "Content-Type": "application/msgpack"})
    boundary = uuid.uuid4().hex
    body = b"".join([
        f"--{boundary}\r\n".encode(),
        f'Content-Disposition: form-data; name="file"; filename="image.{item.fmt}"\r\n'.encode(),
        f"Content-Type: {_CONTENT_TYPES[item.fmt]}\r\n\r\n".encode(),
        item.data,
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    return Payload(body, {**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
