"""The page for people (util/web) through Flask's test client, and the Conditions API it reads notes from."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from urllib.parse import quote

import numpy as np
import pytest

from tests.support import TEST_LIMITS, TINY_LABELS, image_bytes, leaf_like, sample_bytes
from util import conditions
from util.batcher import Overloaded
from util.domain import METHOD, Verdict

PAGE = "/diagnose"
PLANT = "/Diagnosis/plant"
LEAF = image_bytes(size=(64, 64))
NOTES = conditions.load_notes()


def post_photos(client, photos, **fields):
    """POST (file name, bytes) photos to the page's form, as a browser without JavaScript does."""
    return client.post(PAGE, data={"images": [(io.BytesIO(d), n) for n, d in photos], **fields})


def text_of(response) -> str:
    """The page's words without tags, whitespace collapsed: what a person reads."""
    html = response.get_data(as_text=True)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def assert_page(response, status: int = 200) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return text_of(response)


# --- the page ------------------------------------------------------------------------------------


def test_page_has_a_labelled_form_that_posts_photos_to_itself(client, app):
    r = client.get(PAGE)
    assert_page(r)
    html = r.get_data(as_text=True)
    assert re.search(r'<html lang="en"', html)
    form = re.search(r"<form [^>]*>", html).group(0)
    assert 'method="post"' in form and 'enctype="multipart/form-data"' in form and f'action="{PAGE}"' in form
    photos = re.search(r'<input id="photos"[^>]*>', html).group(0)
    assert 'type="file"' in photos and 'accept="image/*"' in photos and "multiple" in photos
    assert 'name="images"' in photos
    camera = re.search(r'<input id="camera"[^>]*>', html).group(0)
    assert 'capture="environment"' in camera and 'name="images"' in camera
    assert (
        '<label id="dropzone" class="dropzone" for="photos">' in html and '<label class="camera" for="camera">' in html
    )
    assert re.search(r'<button id="diagnose-button" type="submit"', html)
    assert 'role="status"' in html and 'aria-live="polite"' in html


def test_page_renders_the_service_limits_for_the_script(client, app):
    settings = app.config["SETTINGS"]
    html = client.get(PAGE).get_data(as_text=True)
    assert f'data-max-photos="{settings.max_images_per_request}"' in html
    assert f'data-max-photo-bytes="{TEST_LIMITS["max_upload_bytes"]}"' in html
    assert f'data-max-request-bytes="{TEST_LIMITS["max_request_bytes"]}"' in html
    assert f'data-top-k="{settings.default_top_k}"' in html


def test_page_links_to_the_api_docs_and_says_information_not_advice(client):
    r = client.get(PAGE)
    words = assert_page(r)
    assert 'href="/"' in r.get_data(as_text=True)
    assert "Information, not advice" in words
    assert conditions.disclaimer() in words


def test_api_docs_link_to_the_page(client):
    assert "(/diagnose)" in client.get("/swagger.json").get_json()["info"]["description"]


def test_app_redirects_to_the_page(client):
    r = client.get("/app")
    assert r.status_code == 302 and r.headers["Location"].endswith(PAGE)


def test_page_loads_nothing_from_another_site(client):
    html = client.get(PAGE).get_data(as_text=True)
    assets = re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]+)"', html)
    assert assets and all(url.startswith("/") for url in assets), assets
    assert "<style" not in html and " style=" not in html  # the CSP allows no inline style
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # nor inline script


@pytest.mark.parametrize(("path", "mimetype"), [("diagnose.css", "text/css"), ("diagnose.js", "text/javascript")])
def test_static_files_are_served_locally(client, path, mimetype):
    r = client.get(f"{PAGE}/static/{path}")
    assert r.status_code == 200 and r.mimetype == mimetype
    assert "http://" not in r.get_data(as_text=True) and "https://" not in r.get_data(as_text=True)
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_page_answers_carry_security_headers(client):
    r = client.get(PAGE)
    policy = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "img-src 'self' blob: data:" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"]
    assert post_photos(client, [("notes.txt", b"hello")]).headers["Content-Security-Policy"] == policy


@pytest.mark.parametrize("path", ["/", "/swagger.json", "/Conditions/", "/health/live"])
def test_the_api_and_swagger_keep_their_own_headers(client, path):
    # The page's script and style policy stays on the page; only "never in a frame" (issue 27) is everywhere.
    assert client.get(path).headers["Content-Security-Policy"] == "frame-ancestors 'none'"


# --- the form without JavaScript ----------------------------------------------------------------


def test_form_post_of_a_sample_photo_renders_its_diagnosis(client, service):
    photo = sample_bytes("tomato_late_blight.jpg")
    expected = service.diagnose(photo, 3)  # the tiny model's answer, whatever it is
    r = post_photos(client, [("tomato_late_blight.jpg", photo)])
    words = assert_page(r)
    assert "Photo 1: tomato_late_blight.jpg" in words and "1 photo checked." in words
    assert expected.label in TINY_LABELS and expected.species in words
    assert ("Healthy" if expected.healthy else expected.condition) in words
    assert f"How sure {expected.confidence:.0%}" in words
    assert len(re.findall(r'<li class="card card-(?:healthy|disease)', r.get_data(as_text=True))) == 1


def test_form_post_shows_the_condition_note_with_its_source(client, service, monkeypatch):
    diagnosis = service.describe(np.array([0.1, 0.8, 0.1], np.float32), 3)  # Tomato_Late blight
    monkeypatch.setattr(
        service, "diagnose_many", lambda uploads, k, strict=False, crop=None: [diagnosis] * len(uploads)
    )
    words = assert_page(post_photos(client, [("leaf.png", LEAF)]))
    note = NOTES["Tomato_Late blight"]
    assert "Tomato" in words and "Late blight" in words and "80%" in words
    assert note.summary in words and note.source.name in words
    assert "Signs to look for" in words and "What growers usually do" in words
    assert "Other possibilities" in words and "Tomato: Healthy" in words


def test_form_post_of_several_photos_renders_one_card_each_in_order(client):
    photos = [("a.png", LEAF), ("b.png", image_bytes(size=(40, 80))), ("c.jpg", encoded_leaf())]
    words = assert_page(post_photos(client, photos))
    positions = [words.index(f"Photo {n}: {name}") for n, (name, _) in enumerate(photos, 1)]
    assert positions == sorted(positions) and "3 photos checked." in words


def test_a_text_file_renders_a_readable_error(client):
    r = post_photos(client, [("notes.txt", b"these are my notes, not a photo")])
    words = assert_page(r)
    assert "Photo 1: notes.txt" in words and "This file is not a photo the service can read." in words
    assert "{" not in words  # no JSON on the page


def test_an_over_limit_photo_renders_a_readable_error(client):
    big = b"\xff\xd8\xff" + b"\0" * (TEST_LIMITS["max_upload_bytes"] + 1)
    words = assert_page(post_photos(client, [("huge.jpg", big), ("leaf.png", LEAF)]))
    assert "This photo is too large." in words and "Photo 2: leaf.png" in words


def test_photos_over_the_request_limit_render_a_readable_error(client):
    chunk = b"\0" * (TEST_LIMITS["max_request_bytes"] // 2)
    words = assert_page(post_photos(client, [("a.jpg", chunk), ("b.jpg", chunk), ("c.jpg", chunk)]), 413)
    assert "The photos are too large together." in words and "MB" in words


def test_no_photo_renders_a_readable_error(client):
    r = client.post(PAGE, data={"images": (io.BytesIO(b""), "")})
    assert "No photo was chosen." in assert_page(r, 400)


def test_too_many_photos_render_a_readable_error(client, app):
    limit = app.config["SETTINGS"].max_images_per_request
    words = assert_page(post_photos(client, [(f"{n}.png", LEAF) for n in range(limit + 1)]), 400)
    assert "Too many photos at once." in words and f"at most {limit}" in words


def test_a_busy_service_renders_a_readable_error(client, service, monkeypatch):
    def overloaded(uploads, k, strict=False, crop=None):
        raise Overloaded("queue full")

    monkeypatch.setattr(service, "diagnose_many", overloaded)
    r = post_photos(client, [("leaf.png", LEAF)])
    assert "The service is busy." in assert_page(r, 503) and r.headers["Retry-After"]


def test_a_bug_renders_a_page_not_json(client, service, monkeypatch):
    def broken(uploads, k, strict=False, crop=None):
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "diagnose_many", broken)
    assert "Something went wrong on our side." in assert_page(post_photos(client, [("leaf.png", LEAF)]), 500)


def test_a_photo_the_model_does_not_know_gets_the_message_not_a_diagnosis(client, service, monkeypatch):
    guess = service.describe(np.array([0.1, 0.2, 0.7], np.float32), 3)
    unknown = replace(guess, in_domain=Verdict(True, False, 0.01, 0.05, METHOD))
    monkeypatch.setattr(service, "diagnose_many", lambda uploads, k, strict=False, crop=None: [unknown] * len(uploads))
    r = post_photos(client, [("hand.jpg", LEAF)])
    words = assert_page(r)
    assert "does not look like a leaf of a crop the model knows" in words
    assert "plain background" in words
    results = words.split("Results", 1)[1]  # the form above lists every crop in "Which plant is this?"
    assert "<meter" not in r.get_data(as_text=True) and "Apple" not in results and "How sure" not in words


# --- the grower's hints: which plant, and several photos of one plant (issue 23) -----------------


def test_page_asks_which_plant_and_whether_the_photos_show_one_plant(client, app):
    html = client.get(PAGE).get_data(as_text=True)
    select = re.search(r'<select id="crop" name="crop"[^>]*>(.*?)</select>', html, re.S)
    assert select and '<label class="crop-choice" for="crop">Which plant is this?' in html
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select.group(1))
    assert options == [("", "I don't know"), ("Apple", "Apple"), ("Tomato", "Tomato")]
    checkbox = re.search(r'<input id="one-plant"[^>]*>', html).group(0)
    assert 'type="checkbox"' in checkbox and 'name="one_plant"' in checkbox and "checked" not in checkbox
    assert "These photos show one plant" in text_of(client.get(PAGE))
    assert f'data-max-plant-photos="{app.config["SETTINGS"].max_photos_per_plant}"' in html
    assert 'data-plant-api="/Diagnosis/plant"' in html


def test_form_post_with_a_crop_diagnoses_within_it_and_keeps_the_choice(client):
    r = post_photos(client, [("leaf.png", LEAF)], crop="tomato")
    words = assert_page(r)
    assert "Tomato" in words and "Apple" not in words.split("Results", 1)[1]
    assert '<option value="Tomato" selected>' in r.get_data(as_text=True)


def test_form_post_with_a_crop_the_model_does_not_know_renders_a_readable_error(client):
    words = assert_page(post_photos(client, [("leaf.png", LEAF)], crop="Banana"), 400)
    assert "Unknown plant." in words and "Apple, Tomato" in words


def test_form_post_of_one_plant_renders_one_diagnosis_and_each_photos_status(client):
    photos = [("top.png", LEAF), ("notes.txt", b"not a photo"), ("under.png", image_bytes(color=(90, 160, 60)))]
    r = post_photos(client, photos, one_plant="1", crop="Tomato")
    words = assert_page(r)
    html = r.get_data(as_text=True)
    assert html.count('<li class="card ') == 1  # one diagnosis for the plant, not one per photo
    assert "This plant: one diagnosis from 2 of 3 photos" in words and "Tomato" in words
    statuses = re.findall(r'<li class="plant-photo plant-photo-(\w+)">', html)
    assert statuses == ["used", "problem", "used"]
    assert "Photo 2: notes.txt: This file is not a photo the service can read." in words
    assert "Photo 1: top.png: Used: on its own it looks like Tomato:" in words
    assert re.search(r'<input id="one-plant"[^>]*checked', html)


def test_form_post_of_too_many_photos_of_one_plant_renders_a_readable_error(client, app):
    limit = app.config["SETTINGS"].max_photos_per_plant
    r = post_photos(client, [(f"{n}.png", LEAF) for n in range(limit + 1)], one_plant="1")
    assert f"send at most {limit} photos of one plant" in assert_page(r, 400)


def test_form_post_of_one_plant_whose_photos_are_all_unreadable_renders_a_readable_error(client):
    r = post_photos(client, [("a.txt", b"text"), ("b.txt", b"more")], one_plant="1")
    assert "This file is not a photo the service can read." in assert_page(r, 415)


# --- the script's cards: the server draws them from the JSON API's answer ----------------------------

CARDS = "/diagnose/cards"


def cards_for(client, answer, mode="photos", names=("leaf.png",), numbers=None):
    numbers = list(numbers or range(1, len(names) + 1))
    body = {"mode": mode, "numbers": numbers, "filenames": list(names), "answer": answer}
    return client.post(CARDS, json=body)


def cards_of(html: str) -> list[str]:
    return re.findall(r'<li class="card [^"]*">.*?</li>\s*(?=<li class="card |</ol>)', html, flags=re.S)


def test_the_scripts_cards_are_the_cards_the_form_draws(client, diagnose):
    photos = [("leaf.png", LEAF), ("notes.txt", b"not a photo"), ("green.png", image_bytes(color=(90, 160, 60)))]
    answer = diagnose.many(photos).get_json()
    drawn = cards_for(client, answer, names=[name for name, _ in photos])
    assert drawn.status_code == 200 and drawn.mimetype == "text/html"
    page = post_photos(client, photos).get_data(as_text=True)
    html = drawn.get_data(as_text=True)
    assert cards_of(html) == cards_of(page.split('id="results"', 1)[1])  # the same markup, card for card
    assert len(cards_of(html)) == 3 and "This file is not a photo the service can read." in html
    assert 'data-status="3 photos checked: photo 1: ' in html and "photo 2: This file is not a photo" in html


def test_the_scripts_cards_of_one_plant_keep_each_photos_number_and_say_what_became_of_it(client):
    photos = [("top.png", LEAF), ("under.png", image_bytes(color=(90, 160, 60)))]
    answer = client.post(PLANT, data={"images": [(io.BytesIO(d), n) for n, d in photos], "crop": "Tomato"}).get_json()
    drawn = cards_for(client, answer, mode="plant", names=[n for n, _ in photos], numbers=[2, 3])
    html = drawn.get_data(as_text=True)
    assert drawn.status_code == 200, html
    assert len(cards_of(html)) == 3  # the plant, then each photo
    assert "This plant: one diagnosis from 2 of 2 photos" in html and html.count("card-used") == 2
    assert "Photo 2: top.png" in html and "Photo 3: under.png" in html
    assert re.findall(r'<li class="plant-photo plant-photo-(\w+)">', html) == ["used", "used"]
    assert 'data-status="2 photos of one plant checked: Tomato, ' in html


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"mode": "photos"},
        {"mode": "other", "numbers": [], "filenames": [], "answer": {"results": []}},
        {"mode": "photos", "numbers": [1], "filenames": ["a", "b"], "answer": {"results": [{}, {}]}},
        {"mode": "photos", "numbers": ["x"], "filenames": ["a"], "answer": {"results": [{"status": 200}]}},
        {"mode": "photos", "numbers": [1], "filenames": ["a"], "answer": {"results": [{"diagnosis": []}]}},
        {"mode": "photos", "numbers": [1], "filenames": ["a"], "answer": {"results": [{"diagnosis": {"label": 1}}]}},
        {"mode": "photos", "numbers": [1], "filenames": ["a"], "answer": {"results": "abc"}},
        {"mode": "plant", "numbers": [1], "filenames": ["a"], "answer": {"photos": [1], "label": "x"}},
        {"mode": "photos", "numbers": list(range(999)), "filenames": ["a"] * 999, "answer": {"results": []}},
    ],
)
def test_a_body_the_script_would_never_send_is_a_json_400(client, body):
    r = client.post(CARDS, json=body) if body is not None else client.post(CARDS, data=b"{", content_type="text/plain")
    assert r.status_code == 400 and r.mimetype == "application/json"
    assert "mode" in r.get_json()["message"]


def test_a_diagnosis_with_odd_but_typed_fields_still_draws(client):
    odd = {"label": "<b>x</b>", "confidence": "0.4", "top_k": [], "in_domain": {"available": True, "known": True}}
    r = cards_for(client, {"results": [{"status": 200, "diagnosis": odd}]}, names=["<i>.png"])
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "<b>x</b>" not in html and "&lt;i&gt;.png" in html  # escaped, never markup
    assert "The model is not sure" in html


# --- the Conditions API ---------------------------------------------------------------------------


def test_conditions_lists_every_note_with_the_disclaimer(client):
    r = client.get("/Conditions/")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["disclaimer"] == conditions.disclaimer()
    assert [note["label"] for note in body["conditions"]] == list(NOTES)
    assert body["conditions"][0] == NOTES[body["conditions"][0]["label"]].as_dict()


def test_one_condition_note_by_label(client):
    r = client.get("/Conditions/" + quote("Orange_Haunglongbing (aka Citrus greening)"))
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body == {**NOTES["Orange_Haunglongbing (aka Citrus greening)"].as_dict(), "disclaimer": body["disclaimer"]}
    assert "not advice" in body["disclaimer"].lower()


def test_an_unknown_condition_is_a_json_404(client):
    r = client.get("/Conditions/Banana_Moonrot")
    assert r.status_code == 404 and r.is_json
    assert "Banana_Moonrot" in r.get_json()["message"]


def test_the_conditions_api_is_documented(client):
    spec = client.get("/swagger.json").get_json()
    assert {"/Conditions/", "/Conditions/{label}"} <= set(spec["paths"])
    assert "404" in spec["paths"]["/Conditions/{label}"]["get"]["responses"]
    assert {"ConditionNote", "ConditionNotes", "Source"} <= set(spec["definitions"])


def encoded_leaf() -> bytes:
    buffer = io.BytesIO()
    leaf_like().save(buffer, "JPEG")
    return buffer.getvalue()
