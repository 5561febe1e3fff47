"""Wire formats of ``POST /classify``: what a client may send and how we answer.

Requests: raw image bytes (``image/jpeg``, ``image/png``, ``image/webp`` or
``application/octet-stream``), ``multipart/form-data`` with one file field, JSON
``{"image": "<base64>"}``, or MessagePack ``{"image": <bytes>}``. Responses are JSON unless
the ``Accept`` header asks for MessagePack.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, AsyncIterator

import msgpack
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

RAW_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp", "application/octet-stream"})
MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})
JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"


class PayloadError(ValueError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


async def extract_image(body: bytes, headers: Headers, max_bytes: int) -> tuple[bytes, str]:
    """Return the image bytes inside ``body`` and the name of the format it came in."""
    kind = media_type(headers.get("content-type"))
    if kind in RAW_TYPES:
        return body, "raw"
    if kind == JSON_TYPE:
        return _from_json(body), "json"
    if kind in MSGPACK_TYPES:
        return _from_msgpack(body, max_bytes), "msgpack"
    if kind == MULTIPART_TYPE:
        return await _from_multipart(body, headers, max_bytes), "multipart"
    shown = kind or "none"
    raise PayloadError(415, "unsupported_content_type",
                       f"content type {shown!r} not accepted: send image/jpeg|png|webp, multipart/form-data, "
                       "application/json or application/msgpack")


# A request holds one image: a handful of containers at most. Deeply nested or container-heavy
# bodies expand many times over in memory when parsed, so they are refused unparsed.
MAX_CONTAINERS = 64


def _from_json(body: bytes) -> bytes:
    if body.count(b"[") + body.count(b"{") > MAX_CONTAINERS:
        raise PayloadError(400, "bad_json", "JSON body has too many arrays/objects for an image request")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    encoded = document.get("image") if isinstance(document, dict) else None
    if not isinstance(encoded, str):
        raise PayloadError(400, "bad_json", 'JSON body must be an object with a base64 string in "image"')
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(400, "bad_base64", f'"image" is not valid base64: {exc}') from None


def _from_msgpack(body: bytes, max_bytes: int) -> bytes:
    try:
        document = msgpack.unpackb(body, raw=False, max_bin_len=max_bytes, max_str_len=max_bytes,
                                   max_array_len=MAX_CONTAINERS, max_map_len=MAX_CONTAINERS, max_ext_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise PayloadError(400, "bad_msgpack", f"request body is not valid MessagePack: {exc}") from None
    image = document.get("image") if isinstance(document, dict) else None
    if not isinstance(image, (bytes, bytearray)):
        raise PayloadError(400, "bad_msgpack", 'MessagePack body must be a map with binary "image"')
    return bytes(image)


async def _single_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _from_multipart(body: bytes, headers: Headers, max_bytes: int) -> bytes:
    parser = MultiPartParser(headers, _single_chunk(body), max_files=1, max_fields=16, max_part_size=max_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise PayloadError(400, "bad_multipart", f"malformed multipart body: {exc.message}") from None
    try:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                return await value.read()
    finally:
        await form.close()
    raise PayloadError(400, "bad_multipart", "multipart body has no file part")


def wants_msgpack(accept: str | None) -> bool:
    return any(media_type(part) in MSGPACK_TYPES for part in (accept or "").split(","))


def encode_response(document: dict[str, Any], as_msgpack: bool) -> tuple[bytes, str]:
    if as_msgpack:
        return msgpack.packb(document, use_bin_type=True), "application/msgpack"
    return json.dumps(document, separators=(",", ":")).encode(), JSON_TYPE
