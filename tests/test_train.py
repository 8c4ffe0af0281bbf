"""Training and evaluation commands on a tiny real dataset kept in the repository."""

from __future__ import annotations

import io
import json

import pytest
from conftest import TINY_DATA, TINY_LABELS_TSV, sample_bytes, serving

import evaluate
import train
from util import dataset as ds

pytestmark = pytest.mark.slow


def tiny_training_args(out, work, *extra: str) -> list[str]:
    """train.py arguments for a seconds-long run on the tiny dataset kept in tests/data."""
    return [
        *("--data", str(TINY_DATA), "--labels", str(TINY_LABELS_TSV), "--out", str(out), "--work-dir", str(work)),
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
    assert (trained / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((trained / "evaluation.json").read_text())["images"] == 3


def test_trained_artifact_serves_requests(trained, tmp_path):
    with serving(trained, tmp_path) as app:
        r = app.test_client().post(
            "/Diagnosis/prediction", data={"image": (io.BytesIO(sample_bytes("tomato_healthy.jpg")), "leaf.jpg")}
        )
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.get_json()["label"] in ("Corn_Common rust", "Tomato_Late blight", "Tomato_healthy")
        assert app.test_client().get("/health").get_json()["input_size"] == 75


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
            ]
        )
    )
    assert summary["images"] == 12
    assert 0.0 <= summary["top1"] <= summary["top3"] <= 1.0
    assert {row["label"] for row in summary["per_class"]} == {
        "Corn_Common rust",
        "Tomato_Late blight",
        "Tomato_healthy",
    }
    assert (tmp_path / "report.json").exists() and (tmp_path / "confusion_matrix.png").exists()


def test_resume_refuses_to_overwrite_and_continues(trained, tmp_path_factory):
    work = trained.parent / "work"
    with pytest.raises(SystemExit, match="--resume"):
        train.main(tiny_training_args(trained, work, "--epochs", "1"))
    train.main(tiny_training_args(trained, work, "--epochs", "2", "--resume"))
    assert json.loads((work / "state.json").read_text())["epoch"] == 2


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
