"""Condition notes: one sourced, well-formed note for every label the model and the samples use."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from util import conditions
from util.conditions import ConditionNote, ConditionNotesError, load_notes, note_for

ROOT = Path(__file__).resolve().parent.parent
MODEL_LABELS = ROOT / "plantnet" / "labels.txt"
SAMPLE_LABELS = ROOT / "sample_images" / "labels.tsv"


def model_labels() -> list[str]:
    return [line.strip() for line in MODEL_LABELS.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample_labels() -> list[str]:
    with SAMPLE_LABELS.open(encoding="utf-8", newline="") as handle:
        return [row["label"] for row in csv.DictReader(handle, delimiter="\t")]


NOTES = load_notes()


def test_the_notes_cover_exactly_the_model_labels():
    assert list(NOTES) == model_labels()


@pytest.mark.parametrize("label", sorted(set(sample_labels())))
def test_every_sample_label_has_a_note(label):
    assert isinstance(note_for(label), ConditionNote)


@pytest.mark.parametrize("label", model_labels())
def test_each_note_is_complete(label):
    note = NOTES[label]
    assert note.label == label
    assert len(note.summary) > 40
    assert 2 <= len(note.signs) <= 4
    assert 2 <= len(note.management) <= 4
    assert all(item.strip() for item in (*note.signs, *note.management))
    assert len(set(note.signs)) == len(note.signs)
    assert len(set(note.management)) == len(note.management)
    assert note.source.name.strip()
    assert note.source.title.strip()
    url = urlparse(note.source.url)
    assert url.scheme == "https"
    assert url.netloc
    assert " " not in note.source.url


@pytest.mark.parametrize("label", model_labels())
def test_healthy_labels_are_those_whose_condition_is_healthy(label):
    note = NOTES[label]
    healthy = label.partition("_")[2] == "healthy"
    assert note.healthy is healthy
    assert note.summary.startswith("No disease seen") is healthy


def test_no_two_labels_share_a_summary():
    summaries = [note.summary for note in NOTES.values()]
    assert len(set(summaries)) == len(summaries)


def test_the_disclaimer_says_information_not_advice():
    text = conditions.disclaimer()
    assert text.startswith("Information, not advice")
    raw = json.loads(conditions.DEFAULT_PATH.read_text(encoding="utf-8"))
    assert raw["disclaimer"] == text


def test_plant_and_condition_come_from_the_first_underscore():
    note = NOTES["Grape_Leaf blight (aka Isariopsis leaf spot)"]
    assert (note.plant, note.condition) == ("Grape", "Leaf blight (aka Isariopsis leaf spot)")
    assert NOTES["Bell pepper_healthy"].plant == "Bell pepper"


def test_as_dict_is_json_ready():
    data = NOTES["Tomato_Late blight"].as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["healthy"] is False
    assert set(data["source"]) == {"name", "title", "url"}


def test_unknown_label_has_no_note():
    assert note_for("Banana_healthy") is None
    assert note_for("") is None


def test_notes_are_read_once_and_callers_get_their_own_dict():
    first, second = load_notes(), load_notes()
    assert first == second
    assert first is not second
    first.clear()
    assert load_notes() == second


def test_the_loader_rejects_malformed_notes(tmp_path):
    path = tmp_path / "conditions.json"
    path.write_text(
        json.dumps(
            {
                "disclaimer": "Information, not advice.",
                "conditions": {"Tomato_healthy": {"summary": "x", "signs": [], "management": ["y"], "source": {}}},
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConditionNotesError, match="signs"):
        load_notes(path)
    with pytest.raises(ConditionNotesError, match="missing"):
        load_notes(tmp_path / "absent.json")


def test_importing_the_notes_pulls_in_no_web_or_numeric_stack():
    code = (
        "import sys, util.conditions; "
        "print(sorted(m for m in ('numpy', 'flask', 'tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
