"""HEIC/HEIF (pillow-heif) and AVIF (Pillow's own) photos: accepted with the same limits as the rest."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image, features

from tests.support import PREDICT, encoded, sample_bytes
from util import leaf

pillow_heif = pytest.importorskip("pillow_heif")
FORMATS = [
    "HEIF",
    pytest.param("AVIF", marks=pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")),
]
LEAF = "tomato_healthy.jpg"


def leaf_photo() -> Image.Image:
    return Image.open(io.BytesIO(sample_bytes(LEAF))).convert("RGB")


def upright_test_card() -> tuple[Image.Image, bytes]:
    """A 60x30 landscape image, left half blue, and EXIF saying 'rotate 90 degrees clockwise' (orientation 6)."""
    image = Image.new("RGB", (60, 30), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    return image, exif.tobytes()


def post(client, data: bytes, filename: str):
    return client.post(PREDICT, data={"image": (io.BytesIO(data), filename)})


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_leaf_photo_decodes_to_nearly_the_pixels_of_the_original(fmt):
    data = encoded(leaf_photo(), fmt, quality=90)
    image = leaf.decode_image(data)
    assert image.mode == "RGB" and image.size == (256, 256)
    difference = np.abs(leaf.load_pixels(data, 128) - leaf.load_pixels(sample_bytes(LEAF), 128)).mean() * 127.5
    assert difference < 6, f"mean difference {difference:.1f} levels of 255"


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_api_gives_a_heic_or_avif_leaf_the_label_of_its_jpeg(client, fmt):
    jpeg = post(client, sample_bytes(LEAF), "leaf.jpg")
    other = post(client, encoded(leaf_photo(), fmt, quality=95), f"leaf.{fmt.lower()}")
    assert jpeg.status_code == 200 and other.status_code == 200, other.get_data(as_text=True)
    assert other.get_json()["label"] == jpeg.get_json()["label"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exif_rotated_photo_comes_out_upright(fmt):
    image, exif = upright_test_card()
    upright = leaf.decode_image(encoded(image, fmt, exif=exif, quality=95))
    assert upright.size == (30, 60)
    top, bottom = np.asarray(upright.getpixel((15, 10))), np.asarray(upright.getpixel((15, 50)))
    assert top[2] > 150 > top[0], f"top should be blue, got {top}"  # the left half turned to the top
    assert bottom[0] > 150 > bottom[2], f"bottom should be red, got {bottom}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_file_is_a_400(client, fmt, keep):
    data = encoded(leaf_photo(), fmt, quality=90)
    r = post(client, data[: int(len(data) * keep)], f"cut.{fmt.lower()}")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert "damaged or truncated" in r.get_json()["message"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_over_the_pixel_limit_is_a_413_before_any_pixel_is_decoded(client, service, monkeypatch, fmt):
    data = encoded(Image.new("RGB", (120, 100), (40, 140, 50)), fmt, quality=50)

    def no_decoding(self):
        raise AssertionError("decoded an image that is over the pixel limit")

    opened = Image.open(io.BytesIO(data))
    monkeypatch.setattr(type(opened), "load", no_decoding)
    with pytest.raises(leaf.ImageTooLarge):
        leaf.decode_image(data, max_pixels=120 * 100 - 1)
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, max_pixels=120 * 100 - 1))
    r = post(client, data, f"big.{fmt.lower()}")
    assert r.status_code == 413, r.get_data(as_text=True)
    assert "12,000" in r.get_json()["message"]


def test_the_formats_are_listed_as_accepted():
    assert {"HEIF", "AVIF"} <= set(leaf.ACCEPTED_FORMATS)
