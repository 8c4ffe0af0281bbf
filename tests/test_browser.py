"""The page for people in a real headless Chromium, against a real server on the shipped model.

Playwright (requirements-browser.txt) drives the system's Chromium (Debian's package ``chromium``;
Playwright's own browser download is not used). Set PLANTNET_CHROMIUM to another executable.
Every test skips with the reason when either is missing.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support import SAMPLES, SHIPPED_MODEL, Server, expected_samples, model_env
from util.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.shipped_model]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install -r requirements-browser.txt"
)
CHROMIUM = os.environ.get("PLANTNET_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
)
if CHROMIUM is None:
    pytest.skip("no Chromium found: apt-get install chromium (or set PLANTNET_CHROMIUM)", allow_module_level=True)

LABELS = dict(expected_samples())
NOT_A_LEAF = "does not look like a leaf of a crop"  # the service's message, or the page's own fallback
TIMEOUT_MS = 30_000


@dataclass
class Recording:
    """What a page did: every request URL and every console error or uncaught exception."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_clean(self, origin: str) -> None:
        assert not self.errors, self.errors
        strangers = [url for url in self.requests if not (url.startswith(origin + "/") or url.startswith("blob:"))]
        assert not strangers, f"requests left {origin}: {strangers}"


@pytest.fixture(scope="module")
def server(openvino_cache) -> Iterator[Server]:
    """The Procfile's server on the shipped model; it reuses the service's own OpenVINO cache when filled."""
    filled = any(Settings(model_dir=SHIPPED_MODEL).openvino_cache.glob("*/model.xml"))
    server = Server(model_env(SHIPPED_MODEL, None if filled else openvino_cache))
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, server):
    """``open_page(**context_options)`` -> (page on /diagnose, its Recording); closed after the test."""
    contexts = []

    def open_page(**options):
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        recording = Recording()
        page = context.new_page()
        page.on("request", lambda request: recording.requests.append(request.url))
        page.on("console", lambda m: recording.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: recording.errors.append(str(error)))
        page.goto(f"{server.url}/diagnose")
        return page, recording

    yield open_page
    for context in contexts:
        context.close()


def diagnose(page, *files) -> None:
    """Choose the files with the picker, press Diagnose and wait for the answers."""
    page.set_input_files("#photos", list(files))
    page.get_by_role("button", name="Diagnose").click()
    wait_for_answers(page)


def wait_for_answers(page) -> None:
    """Wait until the live region says the photos were checked (no page script: the CSP forbids eval)."""
    sync_api.expect(page.get_by_role("status")).to_contain_text("checked", timeout=TIMEOUT_MS)


def card_text(page, number: int) -> str:
    return page.locator("#results > li").nth(number - 1).inner_text()


def photo_file(name: str) -> dict:
    return {"name": name, "mimeType": "image/jpeg", "buffer": (SAMPLES / name).read_bytes()}


def text_file() -> dict:
    return {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"my notes, not a photo"}


def test_one_photo_gives_its_label_with_notes(open_page, server):
    name = "tomato_late_blight.jpg"
    page, recording = open_page()
    diagnose(page, SAMPLES / name)
    card = page.locator("#results > li").first
    plant, condition = LABELS[name].split("_", 1)
    assert card.locator(".plant").inner_text() == plant
    assert condition in card.locator(".verdict").inner_text()
    assert card.get_by_alt_text(f"Photo 1: {name}").is_visible()
    assert float(card.locator("meter").first.get_attribute("value")) > 0.5
    assert "About Tomato: Late blight" in card.inner_text() and "Source:" in card.inner_text()
    assert plant in page.get_by_role("status").inner_text()
    recording.assert_clean(server.url)


def test_three_photos_give_three_results_in_order(open_page, server):
    names = ["apple_scab.jpg", "corn_common_rust.jpg", "tomato_healthy.jpg"]
    page, recording = open_page()
    diagnose(page, *(SAMPLES / name for name in names))
    assert page.locator("#results > li").count() == 3
    for number, name in enumerate(names, 1):
        plant, condition = LABELS[name].split("_", 1)
        text = card_text(page, number)
        assert f"Photo {number}: {name}" in text and plant in text
        assert ("Healthy" if condition == "healthy" else condition) in text
    assert page.locator("#results > li.card-healthy .verdict").inner_text().strip().endswith("Healthy")
    recording.assert_clean(server.url)


def test_a_text_file_gives_a_readable_error(open_page, server):
    page, recording = open_page()
    page.set_input_files("#photos", [text_file()])
    assert "This file is not a photo." in card_text(page, 1)
    page.get_by_role("button", name="Diagnose").click()
    assert "Nothing to send." in page.get_by_role("alert").inner_text()
    recording.assert_clean(server.url)


def test_a_photo_that_is_not_a_leaf_gets_the_message_not_a_diagnosis(open_page, server):
    page, recording = open_page()
    diagnose(page, not_a_leaf_file())  # not a plant at all
    card = page.locator("#results > li").first
    assert NOT_A_LEAF in card.inner_text()
    assert card.locator("meter").count() == 0 and card.locator(".plant").count() == 0
    recording.assert_clean(server.url)


def test_an_unknown_verdict_shows_its_message_and_no_diagnosis(open_page, server):
    """The verdict contract as the API answers it, whatever the shipped model's calibration says today."""
    message = "This photo does not look like a leaf of a crop the model knows. Photograph one leaf, plain background."
    unknown = {
        "label": "Unknown",
        "confidence": 0.0,
        "top_k": [{"label": "Bell pepper_Bacterial spot", "confidence": 0.48}],
        "species": None,
        "condition": None,
        "healthy": None,
        "model": {"name": "plantnet-inceptionv3", "version": "test"},
        "in_domain": {"available": True, "known": False, "score": 0.01, "threshold": 0.05, "method": "test"},
        "message": message,
    }
    body = {"results": [{"index": 0, "filename": "hand.jpg", "status": 200, "diagnosis": unknown}], "model": {}}
    page, recording = open_page()
    page.route("**/Diagnosis/predictions", lambda route: route.fulfill(json=body))
    diagnose(page, SAMPLES / "apple_scab.jpg")
    card = page.locator("#results > li").first
    assert message in card.inner_text() and "not a leaf the model knows" in page.get_by_role("status").inner_text()
    assert card.locator("meter").count() == 0 and "Bell pepper" not in card.inner_text()
    recording.assert_clean(server.url)


def test_a_busy_service_is_said_in_words(open_page):
    page, _ = open_page()  # Chromium logs the 503 itself as a console error: not checked here
    page.route("**/Diagnosis/predictions", lambda route: route.fulfill(status=503, json={"message": "overloaded"}))
    page.set_input_files("#photos", [SAMPLES / "apple_scab.jpg"])
    page.get_by_role("button", name="Diagnose").click()
    sync_api.expect(page.get_by_role("alert")).to_contain_text("The service is busy.")
    assert "Try again in a moment." in card_text(page, 1)


def test_the_form_works_without_javascript(open_page, server):
    page, recording = open_page(java_script_enabled=False)
    page.set_input_files("#photos", [photo_file("grape_black_rot.jpg"), text_file()])
    with page.expect_navigation():
        page.get_by_role("button", name="Diagnose").click()
    assert page.url == f"{server.url}/diagnose"
    assert "Grape" in card_text(page, 1) and "Black rot" in card_text(page, 1)
    assert "This file is not a photo the service can read." in card_text(page, 2)
    assert "Information, not advice" in page.inner_text("body")
    recording.assert_clean(server.url)


def test_drop_and_paste_add_photos(open_page, server):
    page, recording = open_page()
    photo = base64.b64encode((SAMPLES / "apple_rust.jpg").read_bytes()).decode()
    make_transfer = """(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
        return transfer;
    }"""
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": page.evaluate_handle(make_transfer, photo)})
    page.evaluate(
        f"(b64) => document.dispatchEvent(new ClipboardEvent('paste', {{clipboardData: ({make_transfer})(b64)}}))",
        photo,
    )
    assert page.locator("#results > li").count() == 2
    page.get_by_role("button", name="Diagnose").click()
    wait_for_answers(page)
    assert "Apple" in card_text(page, 1) and "Apple" in card_text(page, 2)
    recording.assert_clean(server.url)


def test_a_phone_sized_page_does_not_scroll_sideways(open_page, server):
    page, recording = open_page(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    assert page.get_by_text("Take a photo with the camera").is_visible()
    diagnose(page, SAMPLES / "orange_haunglongbing_citrus_greening.jpg", SAMPLES / "potato_early_blight.jpg")
    for details in page.locator("details").all():
        details.evaluate("node => { node.open = true; }")
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"scrollWidth {widths[0]} > clientWidth {widths[1]}"
    recording.assert_clean(server.url)


def test_the_drop_zone_is_reached_with_the_keyboard(open_page):
    page, _ = open_page()
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "photos":
            break
    assert page.evaluate("document.activeElement.id") == "photos"
    outline = page.locator("#dropzone").evaluate("node => getComputedStyle(node).outlineStyle")
    assert outline == "solid"  # the focus is visible on the drop zone around the hidden input


# --- the grower's hints: which plant, and several photos of one plant (issue 23) -----------------


def mirrored_file(name: str) -> dict:
    """The sample photo turned over: a second photo of the same leaf."""
    from PIL import Image, ImageOps

    from tests.support import encoded

    image = ImageOps.mirror(Image.open(SAMPLES / name).convert("RGB"))
    return {"name": "mirror.jpg", "mimeType": "image/jpeg", "buffer": encoded(image, "JPEG", quality=92)}


def not_a_leaf_file() -> dict:
    from tests.support import TINY_OUTLIERS

    photo = sorted((TINY_OUTLIERS / "far").glob("*.jpg"))[0]
    return {"name": "not-a-leaf.jpg", "mimeType": "image/jpeg", "buffer": photo.read_bytes()}


def choose_one_plant(page, crop: str) -> None:
    page.get_by_label("Which plant is this?").select_option(crop)
    page.get_by_label("These photos show one plant").check()
    name = "tomato_late_blight.jpg"
    page.set_input_files("#photos", [photo_file(name), mirrored_file(name), not_a_leaf_file()])


def assert_one_plant_of_late_blight(page) -> None:
    cards = page.locator("#results > li")
    plant = cards.first
    assert "This plant: one diagnosis from 2 of 3 photos" in plant.inner_text()
    assert plant.locator(".plant").inner_text() == "Tomato"
    assert "Late blight" in plant.locator(".verdict").inner_text()
    statuses = page.locator("#plant-photos > li")
    assert statuses.count() == 3
    assert [statuses.nth(i).get_attribute("class").split()[-1] for i in range(3)] == [
        "plant-photo-used",
        "plant-photo-used",
        "plant-photo-unknown",
    ]
    assert "Photo 3: not-a-leaf.jpg: Left out: not a leaf the model knows." in statuses.nth(2).inner_text()


def test_one_plant_with_a_crop_gives_one_diagnosis_and_each_photos_status(open_page, server):
    page, recording = open_page()
    choose_one_plant(page, "Tomato")
    with page.expect_response("**/Diagnosis/plant") as answered:
        page.get_by_role("button", name="Diagnose").click()
    wait_for_answers(page)
    body = answered.value.json()  # the page sent the hint and the three photos (Chromium hides file bodies)
    assert body["crop"] == "Tomato" and len(body["photos"]) == 3
    assert_one_plant_of_late_blight(page)
    assert "of one plant checked: Tomato, Late blight" in page.get_by_role("status").inner_text()
    assert "Left out" not in card_text(page, 2) and NOT_A_LEAF in card_text(page, 4)  # each photo's own card
    recording.assert_clean(server.url)


def test_one_plant_works_without_javascript(open_page, server):
    page, recording = open_page(java_script_enabled=False)
    choose_one_plant(page, "Tomato")
    with page.expect_navigation():
        page.get_by_role("button", name="Diagnose").click()
    assert page.url == f"{server.url}/diagnose"
    assert_one_plant_of_late_blight(page)
    assert page.get_by_label("Which plant is this?").input_value() == "Tomato"
    assert page.get_by_label("These photos show one plant").is_checked()
    recording.assert_clean(server.url)
