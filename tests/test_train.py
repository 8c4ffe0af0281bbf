"""Training, calibration and evaluation commands on a tiny real dataset kept in the repository."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest

import evaluate
import train
from tests.support import TINY_DATA, TINY_LABELS_TSV, TINY_OUTLIERS, sample_bytes, serving
from training import data as ds
from training import ood
from training.augment import leaf_mask
from util.model_dir import DOMAIN_FILE, find_artifact

pytestmark = pytest.mark.slow


def tiny_training_args(out, work, *extra: str) -> list[str]:
    """train.py arguments for a seconds-long run on the tiny dataset kept in tests/data."""
    return [
        *("--data", str(TINY_DATA), "--labels", str(TINY_LABELS_TSV), "--outliers", str(TINY_OUTLIERS)),
        *("--out", str(out), "--work-dir", str(work), "--precision", "float32"),
        *("--input-size", "75", "--batch-size", "4", "--min-images", "2", "--val-fraction", "0.25", "--verbose", "0"),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    out = root / "model"
    train.main(tiny_training_args(out, root / "work", "--epochs", "1"))
    return out


def test_training_writes_a_complete_artifact(trained):
    assert (trained / "labels.txt").read_text().splitlines() == [
        "Corn_Common rust",
        "Tomato_Late blight",
        "Tomato_healthy",
    ]
    assert json.loads((trained / "model.json").read_text())["input_size"] == 75
    card = (trained / "MODEL.md").read_text()
    assert "train.py" in card and "confusion_matrix.png" in card and "Tomato_Late blight" in card
    assert "minutes of training" in card  # each epoch's wall time is logged and summed
    training = json.loads((trained / "model.json").read_text())["training"]
    assert training["command"].startswith("python train.py") and training["epochs_run"] == 1
    for picture in ("confusion_matrix.png", "training_curve.png", "in_domain_scores.png"):
        assert (trained / picture).read_bytes().startswith(b"\x89PNG"), picture
    assert json.loads((trained / "evaluation.json").read_text())["images"] == 3


def test_training_calibrates_the_in_domain_verdict(trained):
    calibration = json.loads((trained / "model.json").read_text())["in_domain"]
    assert calibration["method"] == "mahalanobis+energy" and 0.0 <= calibration["threshold"] <= 1.0
    assert (trained / DOMAIN_FILE).exists()
    report = json.loads((trained / "evaluation.json").read_text())["in_domain"]
    names = {row["name"] for row in report}
    assert "validation (known)" in names and "noise (synthetic)" in names
    assert (
        "in-domain verdict" in (trained / "MODEL.md").read_text().lower()
        or "in_domain" in (trained / "MODEL.md").read_text()
    )
    weight = calibration["distance_weight"]
    trials = json.loads((trained / "evaluation.json").read_text())["distance_weight_trials"]
    assert [t["weight"] for t in trials] == list(ood.DISTANCE_WEIGHTS) and weight in ood.DISTANCE_WEIGHTS
    assert f"The distance term's weight is {weight:g}" in (trained / "MODEL.md").read_text()


def test_trained_artifact_serves_requests(trained, tmp_path):
    with serving(trained, tmp_path) as app:
        r = app.test_client().post(
            "/Diagnosis/prediction", data={"image": (io.BytesIO(sample_bytes("tomato_healthy.jpg")), "leaf.jpg")}
        )
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.get_json()["label"] in ("Corn_Common rust", "Tomato_Late blight", "Tomato_healthy")
        assert app.test_client().get("/health").get_json()["input_size"] == 75
        assert r.get_json()["in_domain"]["available"] is True


def test_evaluate_reports_on_the_same_pipeline(trained, tmp_path):
    summary = evaluate.evaluate(
        evaluate.parse_args(
            [
                "--data",
                str(TINY_DATA),
                "--labels",
                str(TINY_LABELS_TSV),
                "--model",
                str(trained),
                "--out",
                str(tmp_path),
                "--backend",
                "tensorflow",
                "--outliers",
                str(TINY_OUTLIERS),
            ]
        )
    )
    assert summary["images"] == 12
    groups = {row["name"]: row for row in summary["in_domain"]}
    assert groups["far"]["images"] == 3 and 0.0 <= groups["far"]["auroc"] <= 1.0
    assert 0.0 <= summary["top1"] <= summary["top3"] <= 1.0
    assert {row["label"] for row in summary["per_class"]} == {
        "Corn_Common rust",
        "Tomato_Late blight",
        "Tomato_healthy",
    }
    for name in ("report.json", "confusion_matrix.png", "in_domain_scores.png"):
        assert (tmp_path / name).exists(), name


def test_evaluate_measures_the_field_proxy_train_reports(trained, tmp_path):
    data = ("--data", str(TINY_DATA), "--labels", str(TINY_LABELS_TSV), "--val-fraction", "0.25")
    where = ("--model", str(trained), "--out", str(tmp_path), "--backend", "tensorflow")
    split = ("--split", "validation", "--outliers", str(TINY_OUTLIERS))
    summary = evaluate.evaluate(evaluate.parse_args([*data, *where, *split]))
    from_training = json.loads((trained / "evaluation.json").read_text())["field_proxy"]
    assert summary["field_proxy"]["images"] == summary["images"] == from_training["images"]
    assert summary["field_proxy"]["top1"] == pytest.approx(from_training["top1"])


def test_resume_refuses_to_overwrite_and_continues(trained, tmp_path_factory):
    work = trained.parent / "work"
    with pytest.raises(SystemExit, match="--resume"):
        train.main(tiny_training_args(trained, work, "--epochs", "1"))
    train.main(tiny_training_args(trained, work, "--epochs", "2", "--resume"))
    epochs = [line.split(",")[0] for line in (work / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]  # the first epoch was not run again


def test_calibrate_command_works_on_any_model_directory(trained, tmp_path):
    import shutil

    from training import calibrate

    model = shutil.copytree(trained, tmp_path / "model")
    (model / DOMAIN_FILE).unlink()
    data = ("--data", str(TINY_DATA), "--labels", str(TINY_LABELS_TSV), "--outliers", str(TINY_OUTLIERS))
    calibrate.main([str(model), *data, "--val-fraction", "0.25"])
    calibration = find_artifact(model).metadata["in_domain"]
    assert calibration["threshold"] is not None and (model / DOMAIN_FILE).exists()
    assert calibration["distance_weight"] in ood.DISTANCE_WEIGHTS


def test_calibrate_chooses_the_field_verdict_and_crop_hint_point_for_an_engine(trained_with_field, tmp_path):
    import shutil

    from training import calibrate
    from util.domain import DomainStatistics

    model = shutil.copytree(trained_with_field, tmp_path / "model")
    finished = find_artifact(model).metadata["in_domain"]
    fitted = DomainStatistics.load(model / DOMAIN_FILE)
    (model / DOMAIN_FILE).unlink()
    data = ("--data", str(TINY_DATA), "--labels", str(TINY_LABELS_TSV), "--outliers", str(TINY_OUTLIERS))
    field = ("--field", str(TINY_FIELD), "--field-val-fraction", "0.34", "--precision", "f32")
    calibrate.main([str(model), *data, *field, "--val-fraction", "0.25"])
    calibration = find_artifact(model).metadata["in_domain"]
    assert (model / DOMAIN_FILE).exists() and calibration["engine"].endswith("/f32")
    for key in ("field_harm_limit", "probability_floor", "crop_hint", "unknown_rejection", "distance_weight"):
        assert type(calibration[key]) is type(finished[key]), key  # the finishing's record, for this engine
    # Fitted on the same training photos with the same targets, through another engine: the same statistics.
    again = DomainStatistics.load(model / DOMAIN_FILE)
    assert again.energy_mean == pytest.approx(fitted.energy_mean, rel=0.02)
    assert again.distance_mean == pytest.approx(fitted.distance_mean, rel=0.02)


def separable(shift_features: float, shift_energy: float, seed: int = 0):
    """Known leaves (3 classes) and unknown photos whose features and logits differ by the given shifts."""
    rng = np.random.default_rng(seed)
    targets = np.arange(300) % 3
    features = rng.normal(size=(300, 6)) + 4 * np.eye(6)[targets]
    logits = rng.normal(size=(300, 3)) + 5 * np.eye(3)[targets]
    unknown_features = rng.normal(size=(200, 6)) + 4 * np.eye(6)[np.arange(200) % 3] + shift_features
    unknown_logits = rng.normal(size=(200, 3)) + 5 * np.eye(3)[np.arange(200) % 3] - shift_energy
    known = {"logits": logits[200:], "features": features[200:]}
    stats = ood.fit_statistics(logits[:200], features[:200], targets[:200], known["logits"], known["features"])
    return stats, known, {"logits": unknown_logits, "features": unknown_features}


def test_the_distance_weight_is_chosen_by_what_separates_unknown_photos():
    stats, known, unknown = separable(shift_features=0.0, shift_energy=4.0)  # only the energy tells them apart
    chosen, trials = ood.choose_distance_weight(stats, known, unknown)
    assert chosen.distance_weight == 0.0 and [t.weight for t in trials] == list(ood.DISTANCE_WEIGHTS)
    assert trials[-1].rejected > trials[0].rejected
    stats, known, unknown = separable(shift_features=6.0, shift_energy=0.0)  # only the distance does
    assert ood.choose_distance_weight(stats, known, unknown)[0].distance_weight == 1.0


def test_a_candidate_whose_verdict_collapsed_does_not_ship():
    from training.finish import Candidate, pick

    accurate = Candidate("last epoch", None, 0.96, 0.969, verdict=0.60)
    trusted = Candidate("halfway", None, 0.95, 0.961, verdict=0.99)
    close = Candidate("best epoch", None, 0.95, 0.965, verdict=0.97)
    assert pick([accurate, trusted]) is trusted
    assert pick([accurate, trusted, close]) is close  # within the tolerance: accuracy decides
    assert pick([Candidate("given", None, 0.9, 0.9)]).name == "given"  # one candidate: no trial verdict


def test_ood_metrics_on_known_scores():
    known, unknown = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.1, 0.2, 0.65])
    assert ood.auroc(known, unknown) == pytest.approx(11 / 12)
    assert ood.auroc(known, known) == pytest.approx(0.5)
    assert ood.fpr_at_tpr(known, unknown, 0.75) == pytest.approx(0.0)
    assert ood.threshold_for(np.linspace(0, 1, 101), 0.9) == pytest.approx(0.1)


def test_leaf_mask_finds_a_leaf_on_a_plain_background():
    image = np.full((64, 64, 3), 200, np.uint8)
    image[16:48, 20:44] = (40, 140, 40)
    mask = leaf_mask(image)
    assert mask[20:44, 24:40].all() and not mask[:8].any() and not mask[:, :8].any()


def test_stratified_split_holds_out_every_class():
    data = ds.scan_folder(TINY_DATA, ds.read_label_map(TINY_LABELS_TSV), 2)
    train_idx, val_idx = ds.stratified_split(data.targets, 0.25, 1)
    assert sorted(set(data.targets[val_idx])) == [0, 1, 2]
    assert not set(train_idx) & set(val_idx)
    assert len(train_idx) + len(val_idx) == len(data.paths)


def test_classes_below_the_minimum_are_left_out_and_reported(tmp_path):
    for name, count in {"big": 3, "small": 1}.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i}.jpg").write_bytes(sample_bytes("tomato_healthy.jpg"))
    data = ds.scan_folder(tmp_path, {}, 2)
    assert data.labels == ["big"] and data.excluded == {"small": 1}
    with pytest.raises(ValueError, match="4 or more"):
        ds.scan_folder(tmp_path, {}, 4)


def test_restricting_to_a_models_labels_keeps_its_classes_in_its_order():
    names = ["a", "b", "c"]
    data = ds.Dataset(paths=[], targets=np.array([0, 1, 2, 1]), labels=names, folders=names, excluded={})
    indices, targets = ds.restrict_to_labels(data, [0, 1, 2, 3], ["b", "a"])
    assert indices == [0, 1, 3] and targets.tolist() == [1, 0, 0]


def test_interpolate_moves_every_weight_the_given_share_of_the_way():
    import keras

    from training.finish import interpolate

    def dense(value: float):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])
        return model

    mixed = interpolate(dense(1.0), dense(3.0), 0.25)
    assert all(np.allclose(w, 1.5) for w in mixed)


def test_a_best_checkpoint_equal_to_the_last_epoch_is_scored_once(tmp_path):
    from types import SimpleNamespace

    import keras

    from training.finish import candidate_sources

    def dense(value: float):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])
        return model

    config = SimpleNamespace(work_dir=tmp_path, init_from=None, finish_from=None)
    last = dense(2.0)
    last.save(tmp_path / "best.keras")
    assert list(candidate_sources(config, last)) == ["last epoch (also the best)"]
    dense(1.0).save(tmp_path / "best.keras")
    assert list(candidate_sources(config, last)) == ["last epoch", "best epoch"]


def test_a_second_training_seed_keeps_the_validation_split(tmp_path):
    first = train.parse_args(tiny_training_args(tmp_path / "a", tmp_path / "work-a"))
    second = train.parse_args(tiny_training_args(tmp_path / "b", tmp_path / "work-b", "--train-seed", "7"))
    assert (first.training_seed, second.training_seed) == (first.seed, 7)
    split_a, split_b = train.load_data(first), train.load_data(second)
    assert np.array_equal(split_a.val_idx, split_b.val_idx) and np.array_equal(split_a.train_idx, split_b.train_idx)


def test_a_soup_of_runs_is_finished_by_train(trained, tmp_path):
    from training.soup import main as soup

    weights = tmp_path / "soup.keras"
    soup([str(trained / "model.keras"), str(trained / "model.keras"), "--out", str(weights)])
    out = tmp_path / "finished"
    train.main(tiny_training_args(out, tmp_path / "work", "--finish-from", str(weights)))
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert [c["name"] for c in evaluation["candidates"]] == ["given weights (soup.keras)"]
    assert evaluation["images"] == 3 and (out / DOMAIN_FILE).exists()
    assert find_artifact(out).labels == find_artifact(trained).labels
    card = (out / "MODEL.md").read_text()
    assert "uniform average of the weights of 2 models (a model soup)" in card and "validation top-1" in card
    training = card[card.index("## Training\n") : card.index("## Known limits")]
    assert "Not trained by this command" in training and "AdamW" not in training
    recorded = json.loads((trained / "model.json").read_text())["training"]  # the ingredients' recipe
    assert f"trained by `{recorded['command']}`, {recorded['epochs_run']} epochs in" in training


def test_a_soup_needs_shares_that_sum_to_one():
    import keras

    from training.soup import weighted_average

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="summing to 1"):
        weighted_average([model, model], [0.5, 0.6])


TINY_FIELD = TINY_DATA.parent / "field-tiny"


@pytest.fixture(scope="module")
def trained_with_field(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-field")
    out = root / "model"
    field_args = ("--field", str(TINY_FIELD), "--field-val-fraction", "0.34", "--synthetic-outliers", "2")
    train.main(tiny_training_args(out, root / "work", "--epochs", "1", *field_args))
    return out


def test_field_photos_train_and_are_reported_beside_lab_photos(trained_with_field):
    evaluation = json.loads((trained_with_field / "evaluation.json").read_text())
    field = evaluation["field"]
    assert field["images"] == 3  # one report photo per class: 6 per class, 2 held out, halved
    assert {row["label"] for row in field["per_class"]} == {"Corn_Common rust", "Tomato_Late blight", "Tomato_healthy"}
    shares = [field[key]["share"] for key in ("best_guess", "accepted", "right", "harm")]
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert abs(field["right"]["share"] + field["harm"]["share"] - field["accepted"]["share"]) < 1e-9
    point = evaluation["operating_point"]
    calibration = json.loads((trained_with_field / "model.json").read_text())["in_domain"]
    assert calibration["threshold"] == point["threshold"] and calibration["field_harm_limit"] == ood.FIELD_HARM_LIMIT
    assert set(point["unknown_rejected"]) <= set(ood.UNKNOWN_REJECTION)
    assert {"threshold", "probability_floor", "crop_probability_floor"} <= set(calibration["crop_hint"])
    card = (trained_with_field / "MODEL.md").read_text()
    assert "## Field photos" in card and "PlantDoc" in card and "CC BY 4.0" in card
    names = [row["name"] for row in evaluation["in_domain"]]
    assert "other plants, field photos (held out)" in names


def test_the_operating_point_accepts_the_most_field_photos_within_the_harm_limit():
    lab = (np.linspace(0.0, 1.0, 201), np.full(201, 0.9))
    field_scores = np.array([0.30, 0.25, 0.20, 0.15, 0.10, 0.05] * 5)
    unsure = np.array([0.9, 0.9, 0.9, 0.2, 0.9, 0.9] * 5)  # the model is unsure of one wrong photo in six
    correct = np.array([True, True, True, False, True, False] * 5)
    nothing = (np.full(100, 0.01), np.full(100, 0.9))  # every unknown photo scores below any threshold > 0.01
    selection = {ds.NOT_A_PLANT: nothing, ds.OTHER_PLANT: nothing}
    point = ood.best_threshold(0.5, lab, (field_scores, np.full(30, 0.9)), correct, selection)
    # Without the floor's help: accepting down to 0.10 gets 4/6 right with 1/6 wrong (over the limit); above
    # 0.15 harm is 0, and the lowest such threshold on the grid accepts the most lab leaves.
    assert point.threshold == pytest.approx(0.152) and point.field_harm == 0.0 and point.floor == 0.0
    assert point.field_right == pytest.approx(0.5) and set(point.unknown_rejected.values()) == {1.0}
    # A floor on the top probability that drops the unsure wrong photo lets the threshold go down to just
    # above 0.05 (the other wrong photo, which the model is sure of).
    point = ood.best_threshold(0.5, lab, (field_scores, unsure), correct, selection)
    assert point.threshold == pytest.approx(0.052) and point.floor > 0.2
    assert point.field_right == pytest.approx(4 / 6) and point.field_harm == 0.0


def test_the_operating_point_rejects_each_kind_of_unknown_photo_at_its_own_target():
    lab = (np.linspace(0.0, 1.0, 201), np.full(201, 0.9))
    field = (np.linspace(0.05, 0.5, 20), np.full(20, 0.9))
    correct = np.ones(20, bool)
    no_plants = (np.full(100, 0.01), np.full(100, 0.9))
    # Other plants' leaves score like field photos: 20 of 100 at 0.30 and above, the rest at 0.01.
    other_plants = (np.r_[np.full(20, 0.3), np.full(80, 0.01)], np.full(100, 0.9))
    strict = ood.best_threshold(0.5, lab, field, correct, {ds.NOT_A_PLANT: no_plants, ds.OTHER_PLANT: other_plants})
    # 80% rejected is under the other plants' target: the threshold must rise above 0.3, whatever it costs.
    assert strict.threshold > 0.3 and strict.unknown_rejected[ds.OTHER_PLANT] == 1.0
    pooled = ood.best_threshold(0.5, lab, field, correct, {ds.NOT_A_PLANT: no_plants, ds.OTHER_PLANT: no_plants})
    assert pooled.threshold < 0.1 and pooled.field_right > strict.field_right


def test_the_lab_style_probe_tells_lab_photos_from_field_photos():
    rng = np.random.default_rng(0)
    shift = np.r_[20.0, np.zeros(15)]  # 8 standard deviations apart along one feature
    lab, field = rng.normal(size=(300, 16)) * 5 + 50 + shift, rng.normal(size=(100, 16)) * 5 + 50 - shift
    probe = ood.fit_lab_style(lab, field)
    assert probe.shape == (17,) and probe.dtype == np.float32
    # the standardisation is folded into the weights: raw features in, a sign out
    weights, bias = probe[:-1], probe[-1]
    assert np.mean(lab @ weights + bias > 0) > 0.95 and np.mean(field @ weights + bias <= 0) > 0.95


def outputs_with_top(top: np.ndarray, looks_lab: bool) -> dict[str, np.ndarray]:
    """Engine outputs over 3 labels whose top probability is ``top``, with the lab-style probe's feature set."""
    logits = np.zeros((len(top), 3), np.float32)
    logits[:, 0] = np.log(2 * top / (1 - top))
    features = np.zeros((len(top), 4), np.float32)
    features[:, 0] = 1.0 if looks_lab else -1.0
    return {"logits": logits, "features": features}


def test_the_lab_style_floor_lets_lab_leaves_through_while_every_limit_holds():
    rng = np.random.default_rng(1)
    fit_on = outputs_with_top(np.full(30, 0.9), True)
    fit_on["features"] = fit_on["features"] + rng.normal(size=(30, 4)).astype(np.float32)
    logits, features = fit_on["logits"], fit_on["features"]
    stats = ood.fit_statistics(logits, features, np.zeros(30, np.int64), logits, features)
    probe = np.r_[1.0, 0.0, 0.0, 0.0, 0.0].astype(np.float32)  # looks lab where the first feature is positive
    stats = replace(stats, lab_style=probe)
    # The plain point (threshold 0: every score passes) has a floor of 0.55; 10% of lab leaves are at 0.48.
    point = ood.OperatingPoint(1.0, 0.0, 0.55, 0.5, 0.05, 0.55, 0.9, {ds.NOT_A_PLANT: 1.0, ds.OTHER_PLANT: 1.0})
    lab = outputs_with_top(np.r_[np.full(90, 0.99), np.full(10, 0.48)], True)
    field = outputs_with_top(np.full(20, 0.5), False)  # field photos keep the plain floor: none accepted
    targets = np.ones(20, np.int64)
    no_plants = outputs_with_top(np.full(50, 0.40), True)
    chosen = ood.lab_style_floor(stats, point, lab, field, targets, {ds.NOT_A_PLANT: no_plants})
    assert chosen.floor == 0.45 and chosen.lab_accepted == 1.0 and chosen.field_harm == 0.0
    # Other plants' leaves that look like lab photos at 0.47: a floor of 0.45 lets 30% of them in (target 85%
    # rejected), so the floor stops at 0.5 and lab leaves stay where they were.
    other = outputs_with_top(np.r_[np.full(30, 0.47), np.full(70, 0.2)], True)
    unknowns = {ds.NOT_A_PLANT: no_plants, ds.OTHER_PLANT: other}
    held = ood.lab_style_floor(stats, point, lab, field, targets, unknowns)
    assert held.floor == 0.5 and held.lab_accepted == 0.9 and held.unknown_rejected[ds.OTHER_PLANT] == 1.0
    # A point that already accepts enough lab leaves keeps its floor.
    sure = outputs_with_top(np.full(100, 0.99), True)
    assert ood.lab_style_floor(stats, point, sure, field, targets, unknowns).floor == 0.55


def test_unknown_photos_are_sorted_into_plants_and_no_plants(tmp_path):
    for folder in ("far", "near", "background", "field/_other_plants"):
        for i in range(8):
            path = tmp_path / folder / f"{folder.replace('/', '-')}-{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    chosen = ds.unknowns_by_kind(tmp_path / "far", tmp_path / "field", held_out=False)
    held = ds.unknowns_by_kind(tmp_path / "far", tmp_path / "field", held_out=True)
    assert {p.parent.name for p in chosen[ds.OTHER_PLANT] + held[ds.OTHER_PLANT]} == {"_other_plants"}
    assert len(chosen[ds.NOT_A_PLANT] + held[ds.NOT_A_PLANT]) == 8
    everything = ds.unknowns_by_kind(tmp_path, None, held_out=False)
    assert {p.parent.name for p in everything[ds.OTHER_PLANT]} <= {"near", "_other_plants"}
    assert not set(chosen[ds.OTHER_PLANT]) & set(held[ds.OTHER_PLANT])


def test_the_crop_hint_point_uses_the_floor_within_the_crop_to_get_more_right():
    from training import crop_hint
    from util.domain import HintPoint

    # Known field photos: right when the model is sure within the crop (0.9), wrong when it is not (0.55).
    sure = np.array([0.9, 0.9, 0.55] * 10)
    field = crop_hint.Photos(np.full(30, 0.5), np.full(30, 0.5), sure, sure > 0.6)
    lab = crop_hint.Photos(np.full(50, 0.5), np.full(50, 0.9), np.full(50, 0.95), np.ones(50, bool))
    unknown = crop_hint.Photos(np.full(40, 0.5), np.full(40, 0.5), np.full(40, 0.5))
    plain = HintPoint(0.1, 0.6, 0.0)  # the unhinted point accepts no field photo (top 0.5 < 0.6)
    found = crop_hint.best_point(plain, field, lab, {ds.NOT_A_PLANT: unknown, ds.OTHER_PLANT: unknown})
    assert crop_hint.shares(found, field) == {
        "accepted": pytest.approx(2 / 3, abs=1e-3),
        "right": pytest.approx(2 / 3, abs=1e-3),
        "harm": 0.0,
    }
    assert not crop_hint.accepts(found, unknown).any() and crop_hint.accepts(found, lab).all()


def test_near_copies_in_any_orientation_stay_on_one_side_of_the_split():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    pixels = np.concatenate([base, base[:, ::-1], np.transpose(base, (0, 2, 1, 3))])  # each photo 3 times
    targets = np.zeros(len(pixels), np.int64)
    groups = ds.near_copy_groups(pixels, targets)
    assert len(set(groups)) == 6
    train_idx, val_idx = ds.grouped_split(targets, groups, 0.34, 1)
    assert len(val_idx) == 6  # two whole groups of three
    assert not set(groups[train_idx]) & set(groups[val_idx])


def test_quantize_gives_the_int8_calibration_every_argument_calibrate_reads():
    from training import calibrate, quantize

    given = ["plantnet", "--data", str(TINY_DATA)]
    expected = set(vars(calibrate.parse_args(given))) - {"precision", "acceptance"}  # quantize sets these two
    assert expected <= set(vars(quantize.parse_args(given)))
