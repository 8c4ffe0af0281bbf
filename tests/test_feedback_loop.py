"""The whole loop on a tiny model: diagnose field photos, correct them over the API, export them
with ``python -m training.feedback export``, and train one epoch on the export as ``--field`` data."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

import train
from tests.support import TINY_DATA, TINY_LABELS_TSV, TINY_OUTLIERS, Diagnoser, serving
from training import feedback as export_command
from training.data import read_label_map
from util.feedback import EXTENSION, OTHER_LABEL

pytestmark = pytest.mark.slow

FIELD_PHOTOS = TINY_DATA.parent / "field-tiny"
CORRECTED = {"Tomato___healthy": "Tomato_healthy", "Tomato___Late_blight": "Tomato_Late blight"}


@pytest.fixture(scope="module")
def kept(tiny_model_dir, openvino_cache, tmp_path_factory):
    """A service with feedback on, after growers sent field photos and said what each one shows."""
    folder = tmp_path_factory.mktemp("loop")
    settings = {
        "feedback": True,
        "database_url": f"sqlite:///{folder / 'db.sqlite3'}",
        "photo_store": str(folder / "photos"),
    }
    with serving(tiny_model_dir, openvino_cache, **settings) as app:
        api, store = app.test_client(), app.extensions[EXTENSION]

        def diagnosed(photo: Path) -> str:
            diagnosis_id = Diagnoser(api).one(photo.read_bytes(), photo.name).get_json()["id"]
            store.flush()
            return diagnosis_id

        for class_folder, label in CORRECTED.items():
            for photo in sorted((FIELD_PHOTOS / class_folder).glob("*.jpg")):
                sent = api.post("/Diagnosis/feedback", json={"id": diagnosed(photo), "correct": False, "label": label})
                assert sent.status_code == 200, sent.get_data(as_text=True)
        some_photo = next((FIELD_PHOTOS / "Tomato___healthy").glob("*.jpg"))
        other = {"id": diagnosed(some_photo), "correct": False, "label": OTHER_LABEL}
        assert api.post("/Diagnosis/feedback", json=other).status_code == 200
        diagnosed(some_photo)  # and one without feedback
        store.close()
    return settings


def test_export_writes_class_folders_as_train_reads_them(kept, tmp_path):
    out = tmp_path / "export"
    args = ["export", str(out), "--database-url", kept["database_url"], "--photo-store", kept["photo_store"]]
    assert export_command.main([*args, "--labels", str(TINY_LABELS_TSV)]) == 0
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert folders == set(CORRECTED) and folders <= set(read_label_map(TINY_LABELS_TSV))
    with (out / "manifest.csv").open() as file:
        rows = list(csv.DictReader(file))
    expected = sum(len(list((FIELD_PHOTOS / f).glob("*.jpg"))) for f in CORRECTED)
    assert len(rows) == expected  # the "other" and the silent diagnosis are not exported
    for row in rows:
        assert row["source"] == "corrected" and CORRECTED[row["folder"]] == row["label"]
        photo = Image.open(io.BytesIO((out / row["file"]).read_bytes()))
        assert photo.format == "JPEG" and not photo.getexif()


def test_a_second_export_removes_what_was_deleted(kept, tmp_path):
    from util.feedback import Database, open_photo_store
    from util.feedback.store import FeedbackStore

    out = tmp_path / "export"
    args = ["export", str(out), "--database-url", kept["database_url"], "--photo-store", kept["photo_store"]]
    args += ["--labels", str(TINY_LABELS_TSV)]
    assert export_command.main(args) == 0
    with (out / "manifest.csv").open() as file:
        first = next(csv.DictReader(file))
    store = FeedbackStore(Database(kept["database_url"]), open_photo_store(kept["photo_store"]))
    try:
        assert store.delete(first["id"])
    finally:
        store.close()
    assert export_command.main(args) == 0
    assert not (out / first["file"]).exists()
    assert first["id"] not in (out / "manifest.csv").read_text()


def test_training_takes_the_export_as_field_data(kept, tmp_path):
    out = tmp_path / "export"
    args = ["export", str(out), "--database-url", kept["database_url"], "--photo-store", kept["photo_store"]]
    assert export_command.main([*args, "--labels", str(TINY_LABELS_TSV)]) == 0
    model = tmp_path / "model"
    train.main(
        [
            *("--data", str(TINY_DATA), "--labels", str(TINY_LABELS_TSV), "--outliers", str(TINY_OUTLIERS)),
            *("--out", str(model), "--work-dir", str(tmp_path / "work"), "--precision", "float32"),
            *("--input-size", "75", "--batch-size", "4", "--min-images", "2", "--val-fraction", "0.25"),
            *("--verbose", "0", "--epochs", "1", "--synthetic-outliers", "2"),
            *("--field", str(out), "--field-val-fraction", "0.34"),
        ]
    )
    evaluation = json.loads((model / "evaluation.json").read_text())
    assert evaluation["field"]["images"] >= 1  # photos of the export were held out and reported on
    assert {row["label"] for row in evaluation["field"]["per_class"]} <= set(CORRECTED.values())
    assert json.loads((model / "model.json").read_text())["training"]["epochs_run"] == 1
