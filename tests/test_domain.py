"""The in-domain verdict: scoring, calibration files, and what an answer says when the photo is not a known leaf."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
from flask import Flask

from tests.support import TINY_LABELS, image_bytes, sample_bytes, serving
from training import ood
from util import model_dir
from util.config import Settings
from util.domain import METHOD, UNAVAILABLE, DomainCheck, DomainStatistics, HintPoint, Verdict
from util.engine import create_engine
from util.labels import restrict_to_crop


def calibrated_copy(source, target, threshold: float):
    """Copy a model directory and give it in-domain statistics fitted on its own answers to synthetic images."""
    shutil.copytree(source, target)
    artifact = model_dir.find_artifact(target)
    engine = create_engine(artifact, Settings.from_env(model_dir=target, backend="tensorflow"))
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1, 1, (24, engine.input_size, engine.input_size, 3)).astype(np.float32)
    out = engine.predict(batch)
    targets = np.arange(24) % len(TINY_LABELS)
    stats = ood.fit_statistics(out["logits"], out["features"], targets, out["logits"], out["features"])
    stats.save(target / model_dir.DOMAIN_FILE)
    model_dir.update_metadata(target, in_domain={"method": METHOD, "threshold": threshold})
    return target


@contextmanager
def app_with_threshold(tiny_model_dir, root, threshold: float) -> Iterator[Flask]:
    with serving(
        calibrated_copy(tiny_model_dir, root / "model", threshold), root / "cache", backend="tensorflow"
    ) as app:
        yield app


@pytest.fixture(scope="module")
def rejecting_app(tiny_model_dir, tmp_path_factory):
    """A model whose threshold no photo can reach: every answer is 'not a known leaf'."""
    with app_with_threshold(tiny_model_dir, tmp_path_factory.mktemp("rejecting"), 1.01) as app:
        yield app


@pytest.fixture(scope="module")
def accepting_app(tiny_model_dir, tmp_path_factory):
    with app_with_threshold(tiny_model_dir, tmp_path_factory.mktemp("accepting"), 0.0) as app:
        yield app


def test_statistics_round_trip_and_score_range(tmp_path):
    rng = np.random.default_rng(1)
    features, logits = rng.normal(size=(60, 8)), rng.normal(size=(60, 3))
    stats = ood.fit_statistics(logits, features, np.arange(60) % 3, logits[:20], features[:20])
    stats.save(tmp_path / "d.npz")
    loaded = DomainStatistics.load(tmp_path / "d.npz")
    scores = loaded.scores(logits, features)
    # stored as float32: the same ranks, give or take one reference image
    assert np.abs(scores - stats.scores(logits, features)).max() <= 1 / len(stats.reference) + 1e-9
    assert scores.min() >= 0 and scores.max() <= 1
    far = loaded.scores(logits * 0 - 50, features * 0 + 100)
    assert far.max() == 0.0  # stranger than every reference leaf


def test_the_distance_weight_is_stored_and_older_files_load_with_weight_one(tmp_path):
    rng = np.random.default_rng(2)
    features, logits = rng.normal(size=(60, 8)), rng.normal(size=(60, 3))
    stats = ood.fit_statistics(logits, features, np.arange(60) % 3, logits[:20], features[:20])
    half = ood.with_distance_weight(stats, 0.5, logits[:20], features[:20])
    half.save(tmp_path / "half.npz")
    assert DomainStatistics.load(tmp_path / "half.npz").distance_weight == 0.5
    with np.load(tmp_path / "half.npz") as stored:  # a file written before the weight existed
        older = {name: stored[name] for name in stored.files if name != "distance_weight"}
    np.savez(tmp_path / "older.npz", **older)
    loaded = DomainStatistics.load(tmp_path / "older.npz")
    assert loaded.distance_weight == 1.0
    assert np.allclose(loaded.raw_scores(logits, features), stats.raw_scores(logits, features), atol=1e-4)


def test_a_model_without_calibration_marks_the_verdict_unavailable(tiny_model_dir, client):
    assert not DomainCheck.for_artifact(model_dir.find_artifact(tiny_model_dir)).available
    answer = client.post("/Diagnosis/prediction", data={"image": (io.BytesIO(image_bytes(fmt="JPEG")), "leaf.jpg")})
    body = answer.get_json() if answer.status_code == 200 else None
    assert body is not None, answer.get_data(as_text=True)
    assert body["in_domain"]["available"] is False and body["label"] in TINY_LABELS


def test_an_int8_engine_reads_its_own_calibration_and_falls_back_to_f32(tiny_model_dir, tmp_path, caplog):
    model = calibrated_copy(tiny_model_dir, tmp_path / "model", 0.25)
    fallback = DomainCheck.for_artifact(model_dir.find_artifact(model), "int8")
    assert fallback.threshold == 0.25 and "calibrated on f32 outputs only" in caplog.text
    int8_file, int8_key = model_dir.domain_calibration("int8")
    assert int8_file != model_dir.DOMAIN_FILE
    shutil.copy(model / model_dir.DOMAIN_FILE, model / int8_file)
    model_dir.update_metadata(model, **{int8_key: {"method": METHOD, "threshold": 0.5}})
    artifact = model_dir.find_artifact(model)
    assert DomainCheck.for_artifact(artifact, "int8").threshold == 0.5
    assert DomainCheck.for_artifact(artifact, "f32").threshold == 0.25
    assert DomainCheck.for_artifact(artifact, "bf16").threshold == 0.25


def post(app, **fields):
    data = {"image": (io.BytesIO(sample_bytes("tomato_healthy.jpg")), "leaf.jpg"), **fields}
    return app.test_client().post("/Diagnosis/prediction", data=data)


def test_a_rejected_photo_reads_as_no_diagnosis(rejecting_app):
    answer = post(rejecting_app)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["in_domain"] == {
        "available": True,
        "known": False,
        "score": body["in_domain"]["score"],
        "threshold": 1.01,
        "method": METHOD,
    }
    assert body["label"] == "Unknown" and body["confidence"] == 0.0
    assert body["species"] is None and body["condition"] is None and body["healthy"] is None
    assert "does not look like a leaf" in body["message"] and "Tomato" in body["message"]
    assert len(body["top_k"]) == 3  # the nearest known labels stay for the original service's clients


def test_strict_turns_a_rejected_photo_into_422(rejecting_app):
    answer = post(rejecting_app, strict="true")
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert "does not look like a leaf of a crop this model knows" in answer.get_json()["message"]


def test_strict_applies_per_photo_in_many_photo_requests(rejecting_app):
    files = [(io.BytesIO(sample_bytes("tomato_healthy.jpg")), "a.jpg"), (io.BytesIO(b"not an image"), "b.txt")]
    answer = rejecting_app.test_client().post("/Diagnosis/predictions", data={"images": files, "strict": "1"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert [item["status"] for item in answer.get_json()["results"]] == [422, 415]


def test_an_accepted_photo_is_a_diagnosis(accepting_app):
    body = post(accepting_app, strict="true").get_json()
    assert body["in_domain"]["known"] is True and body["label"] in TINY_LABELS and body["message"] is None
    assert body["species"] and body["condition"] and isinstance(body["healthy"], bool)


def test_strict_must_be_a_boolean(accepting_app):
    answer = post(accepting_app, strict="perhaps")
    assert answer.status_code == 400 and "strict" in answer.get_json()["message"]


def test_a_photo_the_model_is_unsure_of_is_not_known_under_a_probability_floor():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 8)).astype(np.float32)
    logits = np.zeros((60, 3), np.float32)
    logits[np.arange(60), np.arange(60) % 3] = 6.0  # sure of one class each
    stats = ood.fit_statistics(logits, features, np.arange(60) % 3, logits, features)
    sure, unsure = logits[:1], np.zeros((1, 3), np.float32)  # top probability ~0.995 vs 1/3
    check = DomainCheck(stats, threshold=0.0, probability_floor=0.5)
    assert check.judge(sure, features[:1])[0].known is True
    assert check.judge(unsure, features[:1])[0].known is False
    assert check.verdict_scores(unsure, features[:1])[0] == -1.0  # below any threshold, as judge says
    assert DomainCheck(stats, threshold=0.0).judge(unsure, features[:1])[0].known is True  # older files: no floor


def lab_style_statistics() -> tuple[DomainStatistics, np.ndarray, np.ndarray]:
    """Statistics whose probe says "looks like a lab photo" where the first feature is positive."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(60, 8)).astype(np.float32)
    logits = np.zeros((60, 3), np.float32)
    logits[np.arange(60), np.arange(60) % 3] = 6.0
    stats = ood.fit_statistics(logits, features, np.arange(60) % 3, logits, features)
    probe = np.zeros(9, np.float32)
    probe[0] = 1.0  # weights, then a bias of 0
    return replace(stats, lab_style=probe), features, logits


def test_a_photo_that_looks_like_a_lab_photo_is_judged_by_its_own_floor():
    stats, features, _ = lab_style_statistics()
    lab_like, field_like = features[:1].copy(), features[:1].copy()
    lab_like[0, 0], field_like[0, 0] = 3.0, -3.0
    unsure = np.array([[0.8, 0.2, 0.0]], np.float32)  # top probability 0.50
    check = DomainCheck(stats, threshold=0.0, probability_floor=0.55, lab_style_floor=0.35)
    assert check.judge(unsure, lab_like)[0].known is True
    assert check.judge(unsure, field_like)[0].known is False
    assert check.verdict_scores(unsure, field_like)[0] == -1.0 and check.verdict_scores(unsure, lab_like)[0] >= 0
    # without a lab-style floor (model.json written before it) every photo has the one floor
    assert DomainCheck(stats, threshold=0.0, probability_floor=0.55).judge(unsure, lab_like)[0].known is False


def test_the_lab_style_probe_is_stored_and_older_files_have_none(tmp_path):
    stats, features, _ = lab_style_statistics()
    stats.save(tmp_path / "d.npz")
    loaded = DomainStatistics.load(tmp_path / "d.npz")
    assert np.array_equal(loaded.looks_lab(features), features[:, 0] > 0)
    replace(stats, lab_style=None).save(tmp_path / "older.npz")
    older = DomainStatistics.load(tmp_path / "older.npz")
    assert older.lab_style is None and not older.looks_lab(features).any()


def test_the_lab_style_floor_is_read_from_model_json(tiny_model_dir, tmp_path):
    target = calibrated_copy(tiny_model_dir, tmp_path / "model", 0.3)
    calibration = {"method": METHOD, "threshold": 0.3, "probability_floor": 0.55}
    model_dir.update_metadata(target, in_domain={**calibration, "lab_style": {"probability_floor": 0.35}})
    assert DomainCheck.for_artifact(model_dir.find_artifact(target)).lab_style_floor == 0.35
    model_dir.update_metadata(target, in_domain=calibration)
    assert DomainCheck.for_artifact(model_dir.find_artifact(target)).lab_style_floor is None


def test_a_crop_hint_is_judged_by_its_own_point_on_the_same_score():
    point = HintPoint(threshold=0.2, probability_floor=0.3, crop_probability_floor=0.7)
    check = DomainCheck(None, None, hint_point=point)
    verdict = Verdict(True, True, 0.5, 0.002, METHOD)
    sure_within = np.array([0.5, 0.4, 0.1])  # the hinted crop is labels 1 and 2: 0.8 of what is left
    unsure_within = np.array([0.1, 0.45, 0.45])  # among the crop: 0.5

    def tomato(probabilities: np.ndarray) -> np.ndarray:
        return restrict_to_crop(probabilities, ["Apple_scab", "Tomato_a", "Tomato_b"], "Tomato")[0]

    assert check.with_hint(verdict, sure_within, tomato(sure_within)) == Verdict(True, True, 0.5, 0.2, METHOD)
    assert check.with_hint(verdict, unsure_within, tomato(unsure_within)).known is False
    under = replace(verdict, score=0.1)  # under the hint's threshold
    assert check.with_hint(under, sure_within, tomato(sure_within)).known is False
    # a one-label crop is always sure of itself: the floor over all labels still applies (top 0.26 < 0.3)
    assert check.with_hint(verdict, np.array([0.26, 0.25, 0.25, 0.24]), np.array([1.0])).known is False
    assert DomainCheck(None, None).with_hint(verdict, unsure_within, tomato(unsure_within)) == verdict  # no point
    assert check.with_hint(UNAVAILABLE, sure_within, tomato(sure_within)) == UNAVAILABLE
    assert HintPoint.from_calibration(
        {"crop_hint": {"threshold": 0.02, "probability_floor": 0.5, "crop_probability_floor": 0.7}}
    ) == HintPoint(0.02, 0.5, 0.7)
    assert HintPoint.from_calibration({}) is None  # older model.json: the hint does not change the verdict
