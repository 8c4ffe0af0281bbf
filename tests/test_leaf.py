"""decode_image / preprocess over a table of awkward images built in memory: the decode-level table."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support import animated_gif, declared_png, exif_rotated_jpeg, image_bytes, sample_bytes, sixteen_bit_png
from util import leaf

READABLE = {
    "rgb jpeg": image_bytes(fmt="JPEG"),
    "progressive jpeg": image_bytes(fmt="JPEG", progressive=True, quality=85),
    "cmyk jpeg": image_bytes("CMYK", fmt="JPEG"),
    "grayscale png": image_bytes("L"),
    "rgba png": image_bytes("RGBA"),
    "la png": image_bytes("LA"),
    "palette png": image_bytes("P"),
    "1-bit png": image_bytes("1"),
    "16-bit png": sixteen_bit_png(),
    "webp": image_bytes(fmt="WEBP"),
    "bmp": image_bytes(fmt="BMP"),
    "tiff": image_bytes(fmt="TIFF"),
    "animated gif": animated_gif(),
    "exif-rotated jpeg": exif_rotated_jpeg(),
}

UNREADABLE = {
    "empty": (b"", leaf.ImageError),
    "text": (b"hello, this is not a photo\n" * 20, leaf.UnsupportedImageFormat),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        leaf.UnsupportedImageFormat,
    ),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", leaf.UnsupportedImageFormat),
    "zip": (b"PK\x03\x04" + b"\0" * 100, leaf.UnsupportedImageFormat),
    "truncated jpeg": (image_bytes(fmt="JPEG", size=(400, 300))[:600], leaf.ImageError),
    "truncated png": (image_bytes(size=(400, 300))[:200], leaf.ImageError),
    "declared-huge png": (declared_png(30000, 30000), leaf.ImageTooLarge),
}


@pytest.mark.parametrize("data", READABLE.values(), ids=READABLE.keys())
def test_readable_images_decode_to_rgb_and_preprocess(data):
    image = leaf.decode_image(data)
    assert image.mode == "RGB"
    pixels = leaf.preprocess(image, 40)
    assert pixels.shape == (40, 40, 3) and pixels.dtype == np.float32
    assert -1.0 <= pixels.min() <= pixels.max() <= 1.0


@pytest.mark.parametrize(("data", "error"), UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_uploads_raise_client_errors(data, error):
    with pytest.raises(error) as caught:
        leaf.decode_image(data, max_pixels=40_000_000)
    assert 400 <= caught.value.status_code < 500
    assert str(caught.value)


def test_exif_orientation_is_applied():
    image = leaf.decode_image(exif_rotated_jpeg())
    assert image.size == (30, 60)  # portrait after the 90-degree turn
    top, bottom = np.asarray(image)[5, 15], np.asarray(image)[55, 15]
    assert top[2] > 150 and top[0] < 100  # the blue half is now on top
    assert bottom[0] > 150 and bottom[2] < 100


def test_transparent_pixels_become_white():
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buffer, "PNG")
    assert np.asarray(leaf.decode_image(buffer.getvalue())).min() == 255


def test_sixteen_bit_levels_are_scaled_not_clipped():
    pixels = np.asarray(leaf.decode_image(sixteen_bit_png()))
    assert pixels.max() > 200 and pixels.min() < 10 and len(np.unique(pixels)) > 100


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(leaf.ImageTooLarge, match="limit"):
        leaf.decode_image(image_bytes(size=(200, 100)), max_pixels=10_000)


def test_jpeg_draft_mode_keeps_at_least_the_requested_side():
    photo = sample_bytes("plantnet_original_sample.jpg")
    full = leaf.decode_image(photo)
    draft = leaf.decode_image(photo, min_side=128)
    assert min(full.size) == 3024
    assert 128 <= min(draft.size) < 400
    assert full.size[0] / full.size[1] == pytest.approx(draft.size[0] / draft.size[1], rel=0.01)


def test_preprocess_crops_the_centre_square():
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # the centre square is blue
    pixels = leaf.resize_pixels(image, 20)
    assert pixels.shape == (20, 20, 3)
    assert (pixels[..., 2] == 255).all() and (pixels[..., 0] == 0).all()


def test_scale_pixels_maps_to_minus_one_one():
    assert leaf.scale_pixels(np.array([0.0, 127.5, 255.0])).tolist() == [-1.0, 0.0, 1.0]
