"""Issue 23 over HTTP: the crop hint, one plant from several photos, and GET /Diagnosis/model.

The tiny model (tests/support.py) knows Tomato_healthy, Tomato_Late blight and Apple_scab and has no
in-domain calibration; the shipped model's tests at the end prove the verdict's part with real photos.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.payloads import hostile_payloads
from tests.support import (
    MODEL,
    SHIPPED_MODEL,
    TINY_OUTLIERS,
    Diagnoser,
    encoded,
    image_bytes,
    leaf_like,
    sample_bytes,
    serving,
)

TOMATO = ("Tomato_healthy", "Tomato_Late blight")
PHOTOS = [
    ("a.png", image_bytes(color=(40, 140, 50))),
    ("b.png", encoded(leaf_like(), "PNG")),
    ("c.png", image_bytes(color=(200, 60, 40), size=(80, 80))),
]
BODY_WITHOUT_HINT = {"label", "confidence", "top_k", "species", "condition", "healthy", "model", "in_domain", "message"}


def distribution(body: dict) -> dict[str, float]:
    return {guess["label"]: guess["confidence"] for guess in body["top_k"]}


# --- the crop hint -----------------------------------------------------------------------------


def test_without_a_hint_the_answer_has_exactly_the_fields_it_always_had(diagnose):
    r = diagnose.one(PHOTOS[0][1])
    assert r.status_code == 200, r.get_data(as_text=True)
    assert set(r.get_json()) == BODY_WITHOUT_HINT
    many = diagnose.many(PHOTOS)
    assert all(set(item["diagnosis"]) == BODY_WITHOUT_HINT for item in many.get_json()["results"])


def test_a_crop_hint_renormalises_over_that_crops_labels(diagnose):
    everything = distribution(diagnose.one(PHOTOS[1][1], top_k="3").get_json())
    r = diagnose.one(PHOTOS[1][1], top_k="3", crop="Tomato")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["crop"] == "Tomato" and body["species"] == "Tomato"
    hinted = distribution(body)
    assert set(hinted) == set(TOMATO)  # top_k from the crop's labels only, even when more are asked for
    total = sum(everything[label] for label in TOMATO)
    for label in TOMATO:
        assert hinted[label] == pytest.approx(everything[label] / total, rel=1e-5)
    assert body["confidence"] == pytest.approx(max(hinted.values()))


@pytest.mark.parametrize("spelling", ["apple", " APPLE ", "Ap ple", "a_p-p-l-e"])
def test_case_and_spacing_of_the_crop_are_forgiven(diagnose, spelling):
    r = diagnose.one(PHOTOS[0][1], crop=spelling)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["crop"] == "Apple" and r.get_json()["label"] == "Apple_scab"


def test_the_crop_hint_may_be_a_query_parameter(client):
    import io

    r = client.post("/Diagnosis/prediction?crop=tomato", data={"image": (io.BytesIO(PHOTOS[0][1]), "a.png")})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["crop"] == "Tomato"


def test_an_empty_crop_is_no_hint(diagnose):
    body = diagnose.one(PHOTOS[0][1], crop="").get_json()
    assert set(body) == BODY_WITHOUT_HINT


@pytest.mark.parametrize("route", ["one", "many", "plant"])
def test_a_crop_the_model_does_not_know_is_a_400_listing_the_crops_it_knows(diagnose, route):
    r = diagnose.one(PHOTOS[0][1], crop="Banana") if route == "one" else getattr(diagnose, route)(PHOTOS, crop="Banana")
    assert r.status_code == 400
    message = r.get_json()["message"]
    assert "'Banana'" in message and "Apple, Tomato" in message


def test_every_photo_of_a_many_photo_request_is_diagnosed_within_the_crop(diagnose):
    r = diagnose.many(PHOTOS, crop="Tomato", top_k="3")
    assert r.status_code == 200, r.get_data(as_text=True)
    for item in r.get_json()["results"]:
        assert item["diagnosis"]["crop"] == "Tomato"
        assert set(distribution(item["diagnosis"])) == set(TOMATO)


# --- one plant, several photos ---------------------------------------------------------------


def geometric_mean(rows: list[dict[str, float]]) -> dict[str, float]:
    labels = list(rows[0])
    logs = np.log(np.array([[row[label] for label in labels] for row in rows])).mean(axis=0)
    combined = np.exp(logs) / np.exp(logs).sum()
    return dict(zip(labels, combined.tolist(), strict=True))


def test_one_plant_from_three_photos_is_one_diagnosis_with_each_photos_own_result(diagnose):
    singles = [distribution(item["diagnosis"]) for item in diagnose.many(PHOTOS, top_k="3").get_json()["results"]]
    r = diagnose.plant(PHOTOS, top_k="3")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    expected = geometric_mean(singles)
    assert distribution(body) == pytest.approx(expected, rel=1e-4)
    assert body["label"] == max(expected, key=expected.get)
    assert body["combined_from"] == 3 and "crop" not in body
    assert [photo["filename"] for photo in body["photos"]] == ["a.png", "b.png", "c.png"]
    assert [photo["index"] for photo in body["photos"]] == [0, 1, 2]
    assert [distribution(photo["diagnosis"]) for photo in body["photos"]] == pytest.approx(singles)


def test_a_photo_that_cannot_be_read_is_marked_and_left_out_of_the_combination(diagnose):
    r = diagnose.plant([PHOTOS[0], ("notes.txt", b"not a photo"), PHOTOS[1]], top_k="3", crop="tomato")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["combined_from"] == 2 and body["crop"] == "Tomato"
    assert [photo["status"] for photo in body["photos"]] == [200, 415, 200]
    assert "format" in body["photos"][1]["message"] and "diagnosis" not in body["photos"][1]
    both = diagnose.plant([PHOTOS[0], PHOTOS[1]], top_k="3", crop="tomato").get_json()
    assert distribution(body) == pytest.approx(distribution(both))


def test_a_single_photo_of_a_plant_is_that_photos_diagnosis(diagnose):
    one = diagnose.one(PHOTOS[2][1], top_k="3").get_json()
    plant = diagnose.plant(PHOTOS[2:], top_k="3").get_json()
    assert plant["label"] == one["label"]
    assert distribution(plant) == pytest.approx(distribution(one), rel=1e-5)


@pytest.mark.parametrize(
    ("photos", "words"),
    [
        ([], ["No photo", "1 to 5", "'images'"]),
        ([PHOTOS[0]] * 6, ["at most 5", "not 6", "'images'"]),
    ],
    ids=["none", "six"],
)
def test_no_photo_or_too_many_is_a_400_that_says_what_to_send(diagnose, photos, words):
    r = diagnose.plant(photos)
    assert r.status_code == 400
    assert all(word in r.get_json()["message"] for word in words), r.get_json()


def test_no_readable_photo_is_the_photos_own_status_naming_each(diagnose):
    r = diagnose.plant([("a.txt", b"text"), ("b.txt", b"more text")])
    assert r.status_code == 415
    message = r.get_json()["message"]
    assert "photo 1:" in message and "photo 2:" in message


def test_a_bad_top_k_on_the_plant_route_is_a_400(diagnose):
    assert diagnose.plant(PHOTOS[:1], top_k="0").status_code == 400


def test_the_photo_limit_per_plant_is_a_setting(tiny_model_dir, openvino_cache):
    with serving(tiny_model_dir, openvino_cache, max_photos_per_plant=2) as app:
        plant = Diagnoser(app.test_client()).plant(PHOTOS)
        assert plant.status_code == 400 and "at most 2" in plant.get_json()["message"]
        assert app.test_client().get(MODEL).get_json()["limits"]["max_photos_per_plant"] == 2


# --- what the model is -----------------------------------------------------------------------


def test_the_model_describes_itself(client, app):
    r = client.get(MODEL)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert (body["name"], body["version"]) == ("tiny-test-model", "0.0.1")
    assert body["input_size"] == 32 and body["labels"] == 3
    assert body["engine"] and body["precision"]
    assert body["crops"] == [
        {"crop": "Apple", "labels": ["Apple_scab"]},
        {"crop": "Tomato", "labels": ["Tomato_healthy", "Tomato_Late blight"]},
    ]
    assert body["in_domain"]["available"] is False and body["measured"]["top1"] is None
    settings = app.config["SETTINGS"]
    assert body["limits"]["max_upload_bytes"] == settings.max_upload_bytes
    assert body["limits"]["max_photos_per_plant"] == settings.max_photos_per_plant == 5


# --- the shipped model: the verdict with hints and with one plant ------------------------------


@pytest.fixture(scope="module")
def shipped(openvino_cache):
    with serving(SHIPPED_MODEL, openvino_cache) as app:
        yield app


def mirrored(name: str) -> bytes:
    from PIL import Image, ImageOps

    from tests.support import SAMPLES

    return encoded(ImageOps.mirror(Image.open(SAMPLES / name).convert("RGB")), "JPEG", quality=92)


@pytest.mark.shipped_model
def test_shipped_model_one_plant_with_a_non_leaf_photo_names_the_class_and_marks_that_photo(shipped):
    leaf = "tomato_late_blight.jpg"
    cat = sorted((TINY_OUTLIERS / "far").glob("*.jpg"))[0].read_bytes()
    photos = [(leaf, sample_bytes(leaf)), ("mirror.jpg", mirrored(leaf)), ("not-a-leaf.jpg", cat)]
    r = Diagnoser(shipped.test_client()).plant(photos)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["label"] == "Tomato_Late blight" and body["combined_from"] == 2
    assert body["in_domain"]["known"] is True
    verdicts = [photo["diagnosis"]["in_domain"]["known"] for photo in body["photos"]]
    assert verdicts == [True, True, False]
    assert body["photos"][2]["diagnosis"]["label"] == "Unknown"


@pytest.mark.shipped_model
def test_shipped_model_judges_a_hinted_photo_by_its_crop_hint_point(shipped):
    from util.model_dir import read_metadata

    calibration = read_metadata(SHIPPED_MODEL)["in_domain"]
    diagnose = Diagnoser(shipped.test_client())
    plain = diagnose.one(sample_bytes("tomato_late_blight.jpg")).get_json()
    hinted = diagnose.one(sample_bytes("tomato_late_blight.jpg"), crop="Tomato").get_json()
    assert plain["in_domain"]["threshold"] == calibration["threshold"]
    assert hinted["in_domain"]["threshold"] == calibration["crop_hint"]["threshold"]
    assert hinted["in_domain"]["score"] == plain["in_domain"]["score"]  # the same photo's same score
    assert hinted["label"] == plain["label"] == "Tomato_Late blight" and hinted["in_domain"]["known"] is True


@pytest.mark.shipped_model
def test_shipped_model_a_non_leaf_photo_with_a_crop_hint_is_still_unknown(shipped):
    diagnose = Diagnoser(shipped.test_client())
    for photo in sorted((TINY_OUTLIERS / "far").glob("*.jpg")):
        body = diagnose.one(photo.read_bytes(), photo.name, crop="Tomato").get_json()
        assert body["label"] == "Unknown" and body["crop"] == "Tomato", body
        assert diagnose.one(photo.read_bytes(), photo.name, crop="Tomato", strict="true").status_code == 422
    only_strangers = diagnose.plant([(p.name, p.read_bytes()) for p in sorted((TINY_OUTLIERS / "far").glob("*.jpg"))])
    assert only_strangers.status_code == 200 and only_strangers.get_json()["label"] == "Unknown"
    assert (
        only_strangers.get_json()["combined_from"] == 0
        and "None of these photos" in only_strangers.get_json()["message"]
    )
    strict = diagnose.plant(
        [(p.name, p.read_bytes()) for p in sorted((TINY_OUTLIERS / "far").glob("*.jpg"))], strict="true"
    )
    assert strict.status_code == 422 and "None of these photos" in strict.get_json()["message"]


@pytest.mark.shipped_model
def test_shipped_model_describes_its_crops_and_measured_numbers(shipped):
    body = shipped.test_client().get(MODEL).get_json()
    assert body["name"] == "plantnet-inceptionv3" and body["input_size"] == 160 and body["labels"] == 34
    crops = {group["crop"]: group["labels"] for group in body["crops"]}
    assert "Tomato_Late blight" in crops["Tomato"] and len(crops) == 11
    assert body["in_domain"]["available"] and body["in_domain"]["method"] == "mahalanobis+energy"
    assert 0 < body["in_domain"]["threshold"] < 0.5
    assert body["measured"]["top1"] > 0.9 and body["measured"]["images"] > 500
    assert any(row["name"].startswith("far") for row in body["measured"]["rejected"])
    field = body["measured"]["field"]  # the card's field numbers, as evaluation.json holds them
    assert field["images"] > 100 and 0 < field["harm"] <= field["accepted"] <= 1
    assert field["right"] + field["harm"] == pytest.approx(field["accepted"])
    assert field["best_guess"] < field["best_guess_with_crop"]
    assert field["right_with_crop"] + field["harm_with_crop"] == pytest.approx(field["accepted_with_crop"])


def test_each_hostile_photo_of_a_plant_gets_its_own_status_beside_a_good_leaf(diagnose):
    leaf = ("leaf.png", PHOTOS[1][1])
    for payload in hostile_payloads():
        r = diagnose.plant([leaf, (payload.filename, payload.data)])
        assert r.status_code == 200, (payload.name, r.get_data(as_text=True))
        body = r.get_json()
        assert body["photos"][1]["status"] == payload.status, payload.name
        assert body["combined_from"] == (2 if payload.status == 200 else 1), payload.name


def test_swagger_documents_the_hint_the_plant_route_and_the_model(client):
    spec = client.get("/swagger.json").get_json()
    for route in ("/Diagnosis/prediction", "/Diagnosis/predictions", "/Diagnosis/plant"):
        parameters = {p["name"]: p for p in spec["paths"][route]["post"]["parameters"]}
        assert "crop" in parameters and "Tomato" in parameters["crop"]["description"], route
    plant = spec["paths"]["/Diagnosis/plant"]["post"]
    assert set(plant["responses"]) >= {"200", "400", "413", "415", "422", "503"}
    assert plant["responses"]["200"]["schema"]["$ref"] == "#/definitions/PlantDiagnosis"
    assert "crop" in spec["definitions"]["Diagnosis"]["properties"]
    base, extra = spec["definitions"]["PlantDiagnosis"]["allOf"]  # every field of a Diagnosis, and these
    assert base == {"$ref": "#/definitions/Diagnosis"} and set(extra["required"]) == {"combined_from", "photos"}
    described = spec["paths"]["/Diagnosis/model"]["get"]["responses"]["200"]["schema"]["$ref"]
    assert described == "#/definitions/ModelDescription"
    assert {"crops", "in_domain", "measured", "limits"} <= set(spec["definitions"]["ModelDescription"]["properties"])
