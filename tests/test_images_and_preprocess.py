from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from samples import images
from samples.preprocess import ImageRejected, PreprocessContract, decode_image, preprocess_image

LIMIT = 50_000_000


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_each_accepted_format_decodes_to_rgb(fmt: str) -> None:
    data = images.synthetic_encoded(3, 320, 200, fmt)
    image = decode_image(data, LIMIT)
    assert image.mode == "RGB" and image.size == (320, 200)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_make_unique_changes_bytes_but_not_pixels(fmt: str) -> None:
    data = images.synthetic_encoded(4, 160, 120, fmt)
    a, b = images.make_unique(data, fmt, 1), images.make_unique(data, fmt, 2)
    assert len({data, a, b}) == 3
    pixels = [np.asarray(decode_image(x, LIMIT)) for x in (data, a, b)]
    assert np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[0], pixels[2])


def test_generated_images_are_deterministic_and_varied() -> None:
    assert images.synthetic_encoded(5, 64, 64) == images.synthetic_encoded(5, 64, 64)
    assert images.synthetic_encoded(5, 64, 64) != images.synthetic_encoded(6, 64, 64)


def test_draft_decoding_reduces_a_large_jpeg() -> None:
    data = images.synthetic_encoded(7, 1920, 1080, "jpeg")
    full = decode_image(data, LIMIT)
    draft = decode_image(data, LIMIT, draft_size=256)
    assert full.size == (1920, 1080)
    assert 256 <= min(draft.size) < 1080  # libjpeg scaled by 1/2..1/8, never below the target


def test_preprocess_produces_normalized_chw_crop() -> None:
    contract = PreprocessContract()
    image = Image.new("RGB", (500, 300), (124, 116, 104))  # the ImageNet mean in 0..255
    array = preprocess_image(image, contract)
    assert array.shape == (3, 224, 224) and array.dtype == np.float32
    assert np.abs(array).max() < 0.01
    white = preprocess_image(Image.new("RGB", (224, 224), (255, 255, 255)), contract)
    assert white[0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)


def _truncated_jpeg() -> bytes:
    data = images.synthetic_encoded(8, 320, 240, "jpeg")
    return data[: len(data) // 2]


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"", 400, "empty"),
        (b"definitely not an image", 400, "not_an_image"),
        (_truncated_jpeg(), 400, "undecodable"),
        (_gif(), 415, "unsupported_format"),
    ],
    ids=["empty", "garbage", "truncated", "gif"],
)
def test_bad_images_are_rejected_with_a_status(data: bytes, status: int, reason: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, LIMIT)
    assert caught.value.status == status and caught.value.reason == reason


def test_pixel_limit_is_checked_before_decoding() -> None:
    # A 6000x6000 PNG of one colour: tiny on the wire, 36 M pixels once decoded.
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 200_000
    with pytest.raises(ImageRejected) as caught:
        decode_image(buffer.getvalue(), max_pixels=10_000_000)
    assert caught.value.status == 413


def test_extreme_aspect_ratio_is_cheap() -> None:
    # A 1x200000 image resized shorter-side-first would need ~52 GB; cropping first needs none.
    buffer = io.BytesIO()
    Image.new("RGB", (1, 200_000), (10, 20, 30)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 5_000
    array = preprocess_image(decode_image(buffer.getvalue(), LIMIT), PreprocessContract())
    assert array.shape == (3, 224, 224)
