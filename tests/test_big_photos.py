"""Memory stays bounded whatever legal photos arrive: the decode budget, reduced decoding, trimming."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.slowclients import big_photo, memory_mb, upload
from tests.support import PREDICT, TINY_LABELS, Server, encoded, model_env, sample_bytes
from util import leaf
from util.budget import DecodeBusy, PixelBudget
from util.config import Settings

MB = 1024 * 1024


def test_a_reservation_waits_for_budget_then_proceeds():
    budget = PixelBudget(100)
    order = []

    def second() -> None:
        with budget.reserve(60, timeout=5):
            order.append("second")

    with budget.reserve(60, timeout=1):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.2)
        assert budget.waiting == 1 and order == []
        order.append("first done")
    waiter.join(5)
    assert order == ["first done", "second"]
    assert budget.in_use == 0


def test_a_reservation_that_would_wait_past_its_timeout_is_refused():
    budget = PixelBudget(100)
    with budget.reserve(100, timeout=1), pytest.raises(DecodeBusy), budget.reserve(1, timeout=0.1):
        pass
    assert budget.in_use == 0 and budget.waiting == 0


def test_one_image_larger_than_the_whole_budget_runs_alone_instead_of_never():
    budget = PixelBudget(100)
    with budget.reserve(10_000, timeout=0.1) as held:
        assert held == 100


def test_the_budget_is_sized_from_the_environment():
    assert PixelBudget.for_settings(Settings.from_env({})).capacity == 512 * MB
    assert PixelBudget.for_settings(Settings.from_env({"PLANTNET_DECODE_BUDGET_MB": "64"})).capacity == 64 * MB
    with pytest.raises(ValueError, match="PLANTNET_DECODE_BUDGET_MB"):
        Settings.from_env({"PLANTNET_DECODE_BUDGET_MB": "lots"})


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_a_decode_reserves_from_the_header_before_decoding(fmt):
    budget = PixelBudget(10 * MB)
    seen = []
    real = budget.reserve

    def spy(nbytes, timeout):
        seen.append(nbytes)
        return real(nbytes, timeout)

    budget.reserve = spy
    data = encoded(Image.new("RGB", (1200, 900), (40, 140, 50)), fmt)
    pixels = leaf.load_pixels(data, 64, budget=budget, timeout=1)
    assert pixels.shape == (64, 64, 3)
    drafted = 1200 * 900 // 64 if fmt == "JPEG" else 1200 * 900  # JPEG decodes at 1/8 scale (draft)
    assert seen and seen[0] >= drafted * 4
    assert budget.in_use == 0


def test_large_images_are_shrunk_at_decode_to_the_same_pixels_within_rounding():
    photo = Image.open(io.BytesIO(sample_bytes("tomato_healthy.jpg"))).convert("RGB").resize((2400, 1800))
    data = encoded(photo, "PNG", compress_level=1)
    reduced = leaf.load_pixels(data, 128)
    full = leaf.preprocess(leaf.decode_image(data), 128)
    assert np.abs(reduced - full).mean() * 127.5 < 1.5  # in 0..255 levels


def test_a_full_budget_answers_503_with_retry_after(client, service, monkeypatch):
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, request_timeout_s=0.2))
    monkeypatch.setattr(service, "decode_budget", PixelBudget(1024))
    photo = encoded(Image.new("RGB", (200, 200), (40, 140, 50)), "PNG")
    with service.decode_budget.reserve(1024, timeout=1):  # someone else's big decode holds it all
        busy = client.post(PREDICT, data={"image": (io.BytesIO(photo), "x.png")})
    assert busy.status_code == 503, busy.get_data(as_text=True)
    assert int(busy.headers["Retry-After"]) >= 1
    assert busy.get_json()["message"]
    assert client.post(PREDICT, data={"image": (io.BytesIO(photo), "x.png")}).status_code == 200


@pytest.mark.slow
def test_concurrent_big_photos_stay_within_the_budget_and_memory_comes_back(tiny_model_dir, openvino_cache):
    budget_mb = 200
    server = Server(
        model_env(tiny_model_dir, openvino_cache, PLANTNET_DECODE_BUDGET_MB=str(budget_mb)),
        output=subprocess.DEVNULL,
    )
    try:
        server.wait_healthy()
        leaf_photo = sample_bytes("tomato_healthy.jpg")
        assert upload(server.url, leaf_photo).status == 200
        photos = [("big.png", big_photo("PNG", 30.0, 1)), ("big.webp", big_photo("WEBP", 30.0, 2))]
        warm = memory_mb(server.process.pid)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: upload(server.url, photos[i % 2][1], photos[i % 2][0], 60), range(6)))
        assert [a.status for a in answers] == [200] * 6, [a.body[:200] for a in answers]
        peak = memory_mb(server.process.pid)["hwm"]
        # One 30 MP WebP alone needs ~460 MB while it decodes (libwebp and Pillow copies); six of
        # them at once, unbudgeted, would need about 2 GB more.
        assert peak - warm["rss"] < budget_mb + 500, f"warm {warm['rss']:.0f} MB, peak {peak:.0f} MB"
        assert peak < 1536
        deadline = time.monotonic() + 30
        while memory_mb(server.process.pid)["rss"] > warm["rss"] * 1.2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert memory_mb(server.process.pid)["rss"] <= warm["rss"] * 1.2
        after = upload(server.url, leaf_photo)
        assert after.status == 200 and json.loads(after.body)["label"] in TINY_LABELS
    finally:
        assert server.stop() == 0
