"""Decode and preprocess: the image half of the request path, shared by the server,
artifact calibration and tests so that all three feed the model identical tensors."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
_OTHER_IMAGE_MAGIC = (b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00")


@dataclass(frozen=True)
class PreprocessContract:
    """What the model expects: resize the shorter side, centre-crop, normalize (ImageNet)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    color: str = "RGB"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_input_size(cls, crop: int) -> PreprocessContract:
        return cls(resize=round(crop * 256 / 224), crop=crop)


class ImageRejected(ValueError):
    """Input that is not an acceptable image. ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def sniff_format(data: bytes) -> str:
    if not data:
        raise ImageRejected(400, "empty", "empty body: no image bytes")
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(_OTHER_IMAGE_MAGIC):
        raise ImageRejected(415, "unsupported_format", "unsupported image format: send JPEG, PNG or WebP")
    raise ImageRejected(400, "not_an_image", "body is not a JPEG, PNG or WebP image")


def decode_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode to RGB. ``draft_size`` lets libjpeg decode at 1/2..1/8 scale when the
    image is far larger than the model needs (JPEG only; others ignore it)."""
    fmt = sniff_format(data)
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                413, "too_many_pixels", f"image is {width}x{height} pixels; the limit is {max_pixels} pixels"
            )
        if draft_size and fmt == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(413, "too_many_pixels", f"image rejected as a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(400, "undecodable", f"cannot decode {fmt} image: {exc}") from exc
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess_image(image: Image.Image, contract: PreprocessContract) -> np.ndarray:
    """Resize (shorter side), centre-crop and normalize to a float32 CHW array.

    The crop is taken in source coordinates and resampled straight to ``crop x crop``, so the
    work and memory are bounded by the output even for extreme aspect ratios (resizing a
    1x200000 image's shorter side to 256 first would need tens of GB)."""
    width, height = image.size
    side = min(width, height) * contract.crop / contract.resize  # the crop, in source pixels
    left, top = (width - side) / 2, (height - side) / 2
    image = image.resize((contract.crop, contract.crop), Image.Resampling.BILINEAR,
                         box=(left, top, left + side, top + side), reducing_gap=None)
    pixels = np.asarray(image, dtype=np.float32)
    mean = np.asarray(contract.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(contract.std, dtype=np.float32) * 255.0)
    return np.ascontiguousarray(((pixels - mean) * inv_std).transpose(2, 0, 1))
