"""The pixel size of an image in a request body, read from its header alone.

The wire probe keeps nothing of a body but its hash and length — and, through this module,
the format and the width × height of an image it carries: what a decode- or preprocessing
gain scales with. Only the header is read: a JPEG's start-of-frame segment (after any EXIF
or ICC segments), a PNG's IHDR chunk. The image may be the body itself, a part of a
multipart form, or base64 text inside JSON (``/9j/`` starts a base64 JPEG, ``iVBORw0KGgo``
a base64 PNG). Bodies are fed chunk by chunk; at most :data:`PREFIX_MAX` bytes are held, and
only until the size is known.
"""

from __future__ import annotations

import base64
import binascii
import re

PREFIX_MAX = 256 * 1024  # a JPEG's start of frame comes after its EXIF/ICC segments (64 KiB each at most)
_SEARCH = 8192  # where a multipart part or a JSON field may put the image's first byte
_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
_B64_START = re.compile(rb"/9j/|iVBORw0KGgo")
_B64_RUN = re.compile(rb"[A-Za-z0-9+/]*")
# start-of-frame markers: baseline, extended, progressive, lossless (not DHT C4, JPG C8, DAC CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}


def _jpeg_size(data: bytes, start: int) -> tuple[int, int] | None | bool:
    """(width, height) from the SOF segment; None: not there yet; False: not a JPEG after all."""
    i = start + 2
    while True:
        while i < len(data) and data[i] != 0xFF:  # bytes between segments are not allowed, but seen
            i += 1
        while i < len(data) and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= len(data):
            return None
        marker = data[i]
        i += 1
        if marker in _NO_LENGTH:
            continue
        if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan before any frame header
            return False
        if i + 2 > len(data):
            return None
        length = int.from_bytes(data[i:i + 2], "big")
        if marker in _SOF:
            if i + 7 > len(data):
                return None
            height, width = int.from_bytes(data[i + 3:i + 5], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            return (width, height) if width and height else False
        if length < 2:
            return False
        i += length


def _binary_size(data: bytes) -> tuple[str, int, int] | None | bool:
    png = data.find(_PNG, 0, _SEARCH + len(_PNG))
    jpeg = data.find(_JPEG, 0, _SEARCH + len(_JPEG))
    if png >= 0 and (jpeg < 0 or png < jpeg):
        if len(data) < png + 24:
            return None
        if data[png + 12:png + 16] != b"IHDR":
            return False
        return "png", int.from_bytes(data[png + 16:png + 20], "big"), int.from_bytes(data[png + 20:png + 24], "big")
    if jpeg >= 0:
        size = _jpeg_size(data, jpeg)
        return ("jpeg", *size) if isinstance(size, tuple) else size
    return None if len(data) < _SEARCH else False


def image_size(data: bytes) -> tuple[str, int, int] | None | bool:
    """``(format, width, height)`` of the image this body prefix carries; ``None`` while more
    bytes could still tell; ``False`` when it carries no image this module can read."""
    found = _binary_size(data)
    if found is not False and (found is not None or _B64_START.search(data, 0, _SEARCH + 16) is None):
        return found  # a binary image (or, short of one, not yet base64 text either)
    match = _B64_START.search(data, 0, _SEARCH + 16)
    if match is None:
        return False
    run = _B64_RUN.match(data, match.start()).group()
    run = run[:len(run) // 4 * 4]
    try:
        decoded = base64.b64decode(run, validate=True)
    except (binascii.Error, ValueError):
        return False
    found = _binary_size(decoded)
    if found is None and match.start() + len(run) + 4 < len(data):
        return False  # the base64 text ended before the header did
    return found


class ImageSniffer:
    """Feed a body's chunks; ``result`` is ``(format, width, height)`` once known, else None."""

    __slots__ = ("_buffer", "done", "result")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.done = False
        self.result: tuple[str, int, int] | None = None

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        self._buffer += chunk[:PREFIX_MAX - len(self._buffer)]
        found = image_size(bytes(self._buffer))
        if found is None and len(self._buffer) < PREFIX_MAX:
            return
        self.result = found if isinstance(found, tuple) else None
        self.done = True
        self._buffer = bytearray()
