"""Issue 27's holes, each closed and checked in-process: headers, metric labels, decode memory and time.

The same attacks against the real server are bench/attacks.py; the server-level ones (connection
floods, the admin port, health of a dead engine) are in tests/test_server_attacks.py.
"""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from tests.slowclients import big_photo
from tests.support import PREDICT, encoded, image_bytes, leaf_like, sample_bytes, text_chunk_png
from util import leaf
from util.budget import DecodeBusy, IdleTrim, PixelBudget

# --- headers (item 8) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/health/live"), ("GET", "/metrics"), ("GET", "/nowhere"), ("GET", "/diagnose")],
)
def test_every_answer_says_nosniff_and_never_in_a_frame(client, method, path):
    r = client.open(path, method=method)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_diagnoses_are_not_stored_by_caches(diagnose):
    ok = diagnose.one(sample_bytes("tomato_healthy.jpg"))
    refused = diagnose.one(b"not a photo", "x.txt")
    many = diagnose.many([("a.jpg", sample_bytes("tomato_healthy.jpg"))])
    assert ok.status_code == 200 and refused.status_code == 415 and many.status_code == 200
    assert {ok.headers["Cache-Control"], refused.headers["Cache-Control"], many.headers["Cache-Control"]} == {
        "no-store"
    }


# --- metric labels (item 2) ----------------------------------------------------------------------


def test_made_up_methods_do_not_grow_the_metrics(client):
    client.open(PREDICT, method="FROB")  # the OTHER series exists from here on
    before = len(client.get("/metrics").data)
    for i in range(200):
        r = client.open(f"/made/up/{i}", method="X" * 1000 + str(i))
        assert r.status_code in (404, 405)
    text = client.get("/metrics").get_data(as_text=True)
    assert len(text) - before < 2_000, "each made-up method or path became a new series"
    assert 'method="OTHER"' in text and 'route="unmatched"' in text
    assert "XXXX" not in text and "/made/up" not in text


# --- decode memory and time (item 1) -------------------------------------------------------------


def test_jpeg_layout_tells_progressive_and_counts_scans():
    baseline = encoded(leaf_like((200, 150)), "JPEG")
    progressive = encoded(leaf_like((200, 150)), "JPEG", progressive=True)
    assert leaf.jpeg_layout(baseline) == leaf.JpegLayout(scans=1)
    layout = leaf.jpeg_layout(progressive)
    assert layout.progressive and layout.buffered and layout.scans >= 5


def test_a_progressive_jpeg_reserves_its_full_size_coefficients():
    """The same 36 MP picture: baseline fits in what is free, progressive waits for its coefficients and times out."""
    size = (6928, 5196)
    picture = Image.new("RGB", size, (40, 140, 50))
    baseline, progressive = encoded(picture, "JPEG"), encoded(picture, "JPEG", progressive=True)
    coefficients = leaf.coefficient_bytes(Image.open(io.BytesIO(progressive)), size)
    assert coefficients >= size[0] * size[1] * 3  # 4:2:0, 16-bit coefficients: 3 bytes a pixel
    budget = PixelBudget(coefficients)
    with budget.reserve(coefficients // 2, timeout=None):  # someone else holds half
        assert leaf.load_pixels(baseline, 160, budget=budget, timeout=0.1).shape == (160, 160, 3)
        with pytest.raises(DecodeBusy):
            leaf.load_pixels(progressive, 160, budget=budget, timeout=0.1)
    assert leaf.load_pixels(progressive, 160, budget=budget, timeout=0.1).shape == (160, 160, 3)


def test_a_jpeg_with_more_scans_than_the_cap_is_refused_before_decoding():
    progressive = encoded(leaf_like((200, 150)), "JPEG", progressive=True)
    scans = leaf.jpeg_layout(progressive).scans
    with pytest.raises(leaf.ImageError, match=f"{scans} scans"):
        leaf.decode_image(progressive, max_jpeg_scans=scans - 1)
    assert leaf.decode_image(progressive, max_jpeg_scans=scans).size == (200, 150)


def test_decoding_stops_when_the_deadline_passes():
    photo = big_photo("PNG", 36.0)
    began = time.monotonic()
    leaf.decode_image(photo, min_side=160)
    whole = time.monotonic() - began
    began = time.monotonic()
    with pytest.raises(leaf.DecodeTimeout) as caught:
        leaf.decode_image(photo, min_side=160, deadline=time.monotonic() + whole / 10)
    assert time.monotonic() - began < whole / 2
    assert caught.value.status_code == 503
    with pytest.raises(leaf.DecodeTimeout):
        leaf.decode_image(image_bytes(), deadline=time.monotonic() - 1)


def test_png_text_chunks_are_capped():
    with pytest.raises(leaf.ImageTooLarge, match="text metadata"):
        leaf.decode_image(text_chunk_png())
    small_text = text_chunk_png(chunks=3, each=2000)
    assert leaf.decode_image(small_text).size == (64, 48)


def test_many_photo_requests_read_each_photo_when_its_turn_comes(service):
    photos = [sample_bytes("tomato_healthy.jpg"), sample_bytes("tomato_late_blight.jpg")]
    files = [io.BytesIO(data) for data in photos]
    from_files = service.diagnose_many(files, 3)
    from_bytes = service.diagnose_many(photos, 3)
    assert [r.label for r in from_files] == [r.label for r in from_bytes]
    assert all(f.tell() == len(d) for f, d in zip(files, photos, strict=True))


def test_photos_past_the_deadline_are_not_read_or_decoded(service):
    photo = sample_bytes("tomato_healthy.jpg")
    assert service.preprocess(photo, deadline=time.monotonic() + 30).shape == (service.input_size,) * 2 + (3,)
    late = io.BytesIO(photo)
    with pytest.raises(leaf.DecodeTimeout):
        service.preprocess(late, deadline=time.monotonic() - 0.01)
    assert late.tell() == 0


def test_memory_is_trimmed_when_the_last_request_of_a_burst_ends():
    trim = IdleTrim(threshold_bytes=1000)
    trim.started()
    trim.started()
    assert trim.finished(900) is False  # another is still in flight
    assert trim.finished(200) is True  # the last one, 1,100 bytes in: trimmed
    trim.started()
    assert trim.finished(10) is False  # too little came in since
