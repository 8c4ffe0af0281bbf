"""Fuzz the decode path: whatever the bytes, only the documented client errors may escape.

Bounded here (FUZZ_EXAMPLES, default 200 per strategy); a longer run is one command:

    FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import io
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from util import leaf

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


def seed_files() -> list[bytes]:
    image = Image.new("RGB", (24, 16), (30, 120, 40))
    image.paste((200, 40, 40), (4, 4, 12, 12))
    seeds = []
    for fmt, mode in [("JPEG", "RGB"), ("PNG", "RGBA"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB")]:
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, fmt)
        seeds.append(buffer.getvalue())
    return seeds


SEEDS = seed_files()


def decode_or_client_error(data: bytes) -> None:
    try:
        pixels = leaf.load_pixels(data, 32, max_pixels=1_000_000)
    except leaf.ImageError as exc:
        assert 400 <= exc.status_code < 500 and str(exc)
        return
    assert pixels.shape == (32, 32, 3) and np.isfinite(pixels).all()


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    decode_or_client_error(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=12),
    st.integers(0, 10_000),
)
def test_mutated_images(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    decode_or_client_error(bytes(data[: max(1, len(data) - cut % len(data))]))


@FUZZ
@given(st.sampled_from(SEEDS), st.binary(max_size=64), st.integers(0, 4096))
def test_spliced_images(seed, insert, at):
    at %= len(seed)
    decode_or_client_error(seed[:at] + insert + seed[at:])
