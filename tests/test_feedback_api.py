"""Feedback over HTTP (util/api/feedback.py): ids on every diagnosis, POST /Diagnosis/feedback,
GET and DELETE /Diagnosis/diagnoses/<id>; storage failures never fail a diagnosis; acknowledged
feedback survives a killed process."""

from __future__ import annotations

import io
import signal
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, settings

from tests.support import (
    PREDICT,
    TINY_LABELS,
    Diagnoser,
    Server,
    exif_jpeg,
    model_env,
    sample_bytes,
    serving,
)
from util.feedback import EXTENSION, OTHER_LABEL, Database

LEAF = sample_bytes("tomato_healthy.jpg")
FEEDBACK = "/Diagnosis/feedback"
PLANT = "/Diagnosis/plant"


def kept(path: str) -> str:
    return f"/Diagnosis/diagnoses/{path}"


@pytest.fixture(scope="module")
def feedback_app(tiny_model_dir, openvino_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("feedback")
    settings = {"feedback": True, "database_url": f"sqlite:///{folder / 'db.sqlite3'}", "photo_store": str(folder)}
    with serving(tiny_model_dir, openvino_cache, **settings) as app:
        yield app
        app.extensions[EXTENSION].close()


@pytest.fixture
def api(feedback_app):
    return feedback_app.test_client()


@pytest.fixture
def store(feedback_app):
    return feedback_app.extensions[EXTENSION]


@pytest.fixture
def diagnosis_id(api, store) -> str:
    r = Diagnoser(api).one(exif_jpeg((600, 400)))
    assert r.status_code == 200, r.get_data(as_text=True)
    store.flush()
    return r.get_json()["id"]


def test_every_diagnosis_carries_an_id_when_storage_is_on(api, store):
    one = Diagnoser(api).one(LEAF).get_json()
    many = Diagnoser(api).many([("a.jpg", LEAF), ("b.txt", b"not a photo"), ("c.jpg", LEAF)]).get_json()
    ids = [one["id"], many["results"][0]["diagnosis"]["id"], many["results"][2]["diagnosis"]["id"]]
    assert all(isinstance(i, str) and len(i) >= 20 for i in ids) and len(set(ids)) == 3
    assert "diagnosis" not in many["results"][1]  # a failed photo has nothing to keep
    store.flush()
    assert all(api.get(kept(i)).status_code == 200 for i in ids)


def test_a_plant_diagnosis_and_each_of_its_photos_carry_ids(api, store):
    r = api.post(PLANT, data={"images": [(io.BytesIO(LEAF), "a.jpg"), (io.BytesIO(LEAF), "b.jpg")]})
    if r.status_code == 404:
        pytest.skip("this service has no /Diagnosis/plant")
    body = r.get_json()
    assert r.status_code == 200, body
    ids = [body["id"], *(photo["diagnosis"]["id"] for photo in body["photos"])]
    assert len(set(ids)) == 3
    store.flush()
    assert api.get(kept(body["id"])).get_json()["diagnosis"]["label"] == body["label"]


def test_the_loop_confirm_correct_read_delete(api, store, diagnosis_id):
    shown = api.get(kept(diagnosis_id))
    assert shown.status_code == 200, shown.get_data(as_text=True)
    body = shown.get_json()
    assert body["id"] == diagnosis_id and body["feedback"] is None and body["photo_kept"] is True
    assert body["diagnosis"]["label"] in TINY_LABELS and body["diagnosis"]["id"] == diagnosis_id
    assert "crop" not in body["diagnosis"]  # as it was answered: no crop hint, no crop key
    wrong = next(label for label in TINY_LABELS if label != body["diagnosis"]["label"])
    r = api.post(FEEDBACK, json={"id": diagnosis_id, "correct": False, "label": wrong, "note": "brown rings"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["feedback"]["label"] == wrong
    feedback = api.get(kept(diagnosis_id)).get_json()["feedback"]
    assert (feedback["correct"], feedback["label"], feedback["note"]) == (False, wrong, "brown rings")
    photo = store.get(diagnosis_id).photo
    assert api.delete(kept(diagnosis_id)).status_code == 204
    assert api.get(kept(diagnosis_id)).status_code == 404
    assert not store.photos.exists(photo)


def test_feedback_from_a_form_is_accepted(api, diagnosis_id):
    r = api.post(FEEDBACK, data={"id": diagnosis_id, "correct": "false", "label": OTHER_LABEL})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert api.get(kept(diagnosis_id)).get_json()["feedback"]["label"] == OTHER_LABEL


BAD_FEEDBACK = [
    pytest.param({"correct": True}, "id", id="no id"),
    pytest.param({"id": "", "correct": True}, "id", id="empty id"),
    pytest.param({"id": "x" * 65, "correct": True}, "id", id="long id"),
    pytest.param({"id": "ID"}, "correct", id="no correct"),
    pytest.param({"id": "ID", "correct": "maybe"}, "correct", id="correct not a boolean"),
    pytest.param({"id": "ID", "correct": 1}, "correct", id="correct a number"),
    pytest.param({"id": "ID", "correct": False, "label": "Banana_rot"}, "label", id="label not the model's"),
    pytest.param({"id": "ID", "correct": True, "label": TINY_LABELS[0]}, "label", id="label with correct"),
    pytest.param({"id": "ID", "correct": False, "note": "x" * 501}, "note", id="long note"),
    pytest.param({"id": "ID", "correct": False, "note": 5}, "note", id="note not text"),
    pytest.param({"id": "ID", "correct": False, "note": "a\x00b"}, "note", id="note with NUL"),
    pytest.param({"id": "bad id\x00", "correct": True}, "id", id="id not a token"),
    pytest.param({"id": 7, "correct": True}, "id", id="id a number"),
]


@pytest.mark.parametrize(("body", "word"), BAD_FEEDBACK)
def test_bad_feedback_fields_are_400_naming_the_field(api, diagnosis_id, body, word):
    sent = {key: (diagnosis_id if value == "ID" else value) for key, value in body.items()}
    r = api.post(FEEDBACK, json=sent)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert word in r.get_json()["message"]
    assert api.get(kept(diagnosis_id)).get_json()["feedback"] is None


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b'"text"'])
def test_a_body_that_is_no_object_is_400(api, body):
    r = api.post(FEEDBACK, data=body, content_type="application/json")
    assert r.status_code == 400 and "JSON" in r.get_json()["message"]


@pytest.mark.parametrize("unknown", ["nope", "a%00b", "x" * 65, "%E2%9C%93"])
def test_unknown_ids_are_404(api, unknown):
    if "%" not in unknown and len(unknown) <= 64:
        assert api.post(FEEDBACK, json={"id": unknown, "correct": True}).status_code == 404
    r = api.get(kept(unknown))
    assert r.status_code == 404 and "180 days" in r.get_json()["message"]
    assert api.delete(kept(unknown)).status_code == 404


def test_storage_off_answers_404_saying_so(client, diagnose):
    body = diagnose.one(LEAF).get_json()
    assert "id" not in body
    for r in (
        client.post(FEEDBACK, json={"id": "x", "correct": True}),
        client.get(kept("x")),
        client.delete(kept("x")),
    ):
        assert r.status_code == 404 and "PLANTNET_FEEDBACK" in r.get_json()["message"]


@pytest.fixture
def feedback_schema(feedback_app):
    import schemathesis

    return schemathesis.openapi.from_wsgi("/swagger.json", feedback_app).include(
        path_regex="^/Diagnosis/(feedback|diagnoses)"
    )


def feedback_routes():
    import schemathesis

    return schemathesis.pytest.from_fixture("feedback_schema")


@pytest.mark.slow
@feedback_routes().parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_feedback_routes_conform_to_their_documentation(case):
    """Schemathesis with storage on: whatever a client sends, no 5xx, and answers as documented."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    case.call_and_validate(checks=[not_a_server_error, content_type_conformance, response_schema_conformance])


def test_swagger_documents_the_feedback_routes(api):
    spec = api.get("/swagger.json").get_json()
    assert set(spec["paths"][FEEDBACK]) == {"post"}
    assert set(spec["paths"]["/Diagnosis/diagnoses/{diagnosis_id}"]) >= {"get", "delete"}
    assert set(spec["definitions"]["FeedbackInput"]["required"]) == {"id", "correct"}
    assert "id" in spec["definitions"]["Diagnosis"]["properties"]


def test_a_failing_store_never_fails_a_diagnosis(tiny_model_dir, openvino_cache, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    broken = {
        "feedback": True,
        "database_url": "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1",
        "photo_store": str(blocked),
        "request_timeout_s": 10.0,
    }
    with serving(tiny_model_dir, openvino_cache, **broken) as app:
        try:
            client = app.test_client()
            r = Diagnoser(client).one(LEAF)
            assert r.status_code == 200 and r.get_json()["label"] in TINY_LABELS
            app.extensions[EXTENSION].flush()
            metrics = client.get("/metrics").get_data(as_text=True)
            assert 'plantnet_feedback_failures_total{operation="keep"}' in metrics
            sent = client.post(FEEDBACK, json={"id": r.get_json()["id"], "correct": True})
            assert sent.status_code == 503 and "nothing was saved" in sent.get_json()["message"]
        finally:
            app.extensions[EXTENSION].close()


@pytest.mark.slow
def test_acknowledged_feedback_survives_a_killed_process(tiny_model_dir, openvino_cache, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = model_env(
        tiny_model_dir,
        openvino_cache,
        PLANTNET_FEEDBACK="on",
        PLANTNET_DATABASE_URL=url,
        PLANTNET_PHOTO_STORE=str(tmp_path / "photos"),
    )
    server = Server(env)
    try:
        server.wait_healthy()
        answered = requests.post(server.url + PREDICT, files={"image": ("leaf.jpg", LEAF)}, timeout=30).json()
        sent = requests.post(server.url + FEEDBACK, json={"id": answered["id"], "correct": True}, timeout=30)
        assert sent.status_code == 200, sent.text
        server.process.send_signal(signal.SIGKILL)  # no shutdown, no flush: only what was committed remains
        server.process.wait(30)
    finally:
        server.stop()
    database = Database(url)
    kept_row = database.get(answered["id"])
    assert kept_row is not None and kept_row.feedback is not None and kept_row.feedback.correct is True
    assert Path(tmp_path / "photos" / kept_row.photo).is_file()
    database.close()


# --- the client and the command line, against the real service over HTTP ---------------------------


@pytest.fixture
def feedback_url(feedback_app):
    from tests.fake_plantnet import serving as serving_wsgi

    with serving_wsgi(feedback_app) as base:
        yield base


def test_the_client_diagnoses_corrects_and_forgets(feedback_url, store, tmp_path):
    from plantnet_client import Client, RequestRejected

    photo = tmp_path / "leaf.jpg"
    photo.write_bytes(LEAF)
    with Client(feedback_url, retries=0) as client:
        result = client.diagnose(photo).raise_for_error()
        assert result.id and result.to_record()["id"] == result.id
        store.flush()
        wrong = next(label for label in TINY_LABELS if label != result.label)
        saved = client.feedback(result.id, False, label=wrong, note="rings")
        assert saved["feedback"]["label"] == wrong and saved["feedback"]["correct"] is False
        assert client.kept(result.id)["feedback"]["note"] == "rings"
        with pytest.raises(RequestRejected) as rejected:
            client.feedback(result.id, False, label="Banana_rot")
        assert rejected.value.status == 400 and "label" in rejected.value.message
        client.forget(result.id)
        with pytest.raises(RequestRejected) as gone:
            client.kept(result.id)
        assert gone.value.status == 404


def test_the_command_line_shows_ids_and_sends_feedback(feedback_url, api, store, diagnosis_id, capsys, tmp_path):
    from plantnet_client.cli import main

    photo = tmp_path / "leaf.jpg"
    photo.write_bytes(LEAF)
    assert main(["diagnose", str(photo), "--url", feedback_url, "-q"]) == 0
    assert " id " in capsys.readouterr().out  # the table names each diagnosis' id, for the command below

    wrong = TINY_LABELS[2]
    assert main(["feedback", diagnosis_id, "--wrong", "--label", wrong, "--url", feedback_url]) == 0
    assert f"{diagnosis_id}: saved (wrong, it is {wrong})" in capsys.readouterr().out
    assert store.get(diagnosis_id).feedback.label == wrong
    assert main(["feedback", diagnosis_id, "--right", "--url", feedback_url]) == 0
    assert store.get(diagnosis_id).feedback.correct is True
    assert main(["feedback", "no-such-id", "--right", "--url", feedback_url]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["feedback", diagnosis_id, "--right", "--label", wrong, "--url", feedback_url])
    assert usage.value.code == 2


# --- the page: "Was this right?" with and without JavaScript's help -----------------------------------


def test_the_page_says_what_is_kept_only_when_storage_is_on(api, client):
    on = api.get("/diagnose").get_data(as_text=True)
    assert "180 days" in on and "without its location or camera data" in on
    assert 'id="feedback-template"' in on and "data-feedback-api=" in on
    off = client.get("/diagnose").get_data(as_text=True)
    assert "Was this right?" not in off and "180 days" not in off and "data-feedback-api" not in off


def test_the_page_without_javascript_takes_a_correction(api, store):
    page = api.post("/diagnose", data={"images": [(io.BytesIO(LEAF), "leaf.jpg")]})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Was this right?" in html
    card = html.split('id="results"', 1)[1]  # the page's template of the form comes before, without an id
    diagnosis_id = card.split('name="id" value="', 1)[1].split('"', 1)[0]
    store.flush()
    assert store.get(diagnosis_id) is not None
    wrong = TINY_LABELS[2]
    said = api.post("/diagnose/feedback", data={"id": diagnosis_id, "correct": "false", "label": wrong})
    assert said.status_code == 200 and "your answer is saved" in said.get_data(as_text=True)
    assert store.get(diagnosis_id).feedback.label == wrong
    # "Yes" sends the form's condition list too: it is not a correction
    said = api.post("/diagnose/feedback", data={"id": diagnosis_id, "correct": "true", "label": wrong})
    assert said.status_code == 200 and store.get(diagnosis_id).feedback.correct is True
    assert store.get(diagnosis_id).feedback.label is None
    gone = api.post("/diagnose/forget", data={"id": diagnosis_id})
    assert gone.status_code == 200 and "deleted" in gone.get_data(as_text=True)
    assert store.get(diagnosis_id) is None
    again = api.post("/diagnose/forget", data={"id": diagnosis_id})
    assert again.status_code == 404 and "Nothing was deleted" in again.get_data(as_text=True)


@pytest.mark.slow
def test_the_page_with_javascript_asks_then_asks_which_condition(feedback_url, store):
    """In a real headless Chromium (skipped without Playwright and Chromium, as tests/test_browser.py)."""
    import os
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-browser.txt")
    names = ("chromium", "chromium-browser", "google-chrome")
    chromium = os.environ.get("PLANTNET_CHROMIUM") or next(filter(None, map(shutil.which, names)), None)
    if chromium is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set PLANTNET_CHROMIUM)")
    wrong = TINY_LABELS[2]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(feedback_url + "/diagnose")
            page.set_input_files("#photos", str(Path(__file__).parent.parent / "sample_images" / "tomato_healthy.jpg"))
            page.click("#diagnose-button")
            block = page.locator("#results .feedback").first
            block.wait_for()
            diagnosis_id = block.locator(".forget-form input[name=id]").input_value()
            assert diagnosis_id and not block.locator(".feedback-which").is_visible()
            block.locator("button.feedback-no").click()  # "No" first asks which condition it is
            assert block.locator(".feedback-which").is_visible()
            block.locator("select").select_option(wrong)
            block.locator("button.feedback-no").click()
            block.locator(".feedback-thanks").wait_for()
            store.flush()
            assert store.get(diagnosis_id).feedback.label == wrong
            block.locator(".forget-form button").click()
            page.get_by_text("Deleted: the photo").wait_for()
            assert store.get(diagnosis_id) is None
            assert not errors, errors
        finally:
            browser.close()
