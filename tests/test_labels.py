"""Labels: ranking the model's scores, splitting a label into species and condition."""

from __future__ import annotations

import numpy as np
import pytest

from util import labels
from util.plant import combine


def test_top_k_orders_by_probability_and_clamps_k():
    ranked = labels.top_k(np.array([0.1, 0.7, 0.2]), ["a", "b", "c"], 5)
    assert [p.label for p in ranked] == ["b", "c", "a"]
    assert ranked[0].confidence == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("label", "species", "condition", "healthy"),
    [
        ("Tomato_Late blight", "Tomato", "Late blight", False),
        ("Bell pepper_healthy", "Bell pepper", "healthy", True),
        ("Orange_Haunglongbing (aka Citrus greening)", "Orange", "Haunglongbing (aka Citrus greening)", False),
        ("Apple_scab", "Apple", "scab", False),
    ],
)
def test_labels_split_into_species_and_condition(label, species, condition, healthy):
    assert labels.split_label(label) == (species, condition)
    assert labels.is_healthy(label) is healthy


# --- crops (issue 23) ----------------------------------------------------------------------------

CROP_LABELS = ("Apple_scab", "Bell pepper_healthy", "Bell pepper_Bacterial spot", "Tomato_healthy")


def test_crops_and_their_labels_in_the_models_order():
    assert labels.crops(CROP_LABELS) == ["Apple", "Bell pepper", "Tomato"]
    assert labels.labels_by_crop(CROP_LABELS)["Bell pepper"] == ["Bell pepper_healthy", "Bell pepper_Bacterial spot"]


@pytest.mark.parametrize("spelling", ["Bell pepper", "bell pepper", "BELL_PEPPER", "bell-pepper", " BellPepper "])
def test_a_crop_is_found_whatever_its_case_and_spacing(spelling):
    assert labels.resolve_crop(spelling, CROP_LABELS) == "Bell pepper"


@pytest.mark.parametrize("spelling", ["Banana", "", "   ", "pepper", "Bell pepper_healthy"])
def test_a_crop_the_labels_do_not_name_is_unknown(spelling):
    with pytest.raises(labels.UnknownCrop):
        labels.resolve_crop(spelling, CROP_LABELS)


def test_restricting_to_a_crop_renormalises_its_probabilities():
    kept, names = labels.restrict_to_crop(np.array([0.5, 0.1, 0.3, 0.1]), CROP_LABELS, "Bell pepper")
    assert names == ["Bell pepper_healthy", "Bell pepper_Bacterial spot"]
    assert kept == pytest.approx([0.25, 0.75])
    uniform, _ = labels.restrict_to_crop(np.array([1.0, 0.0, 0.0, 0.0]), CROP_LABELS, "Bell pepper")
    assert uniform == pytest.approx([0.5, 0.5])  # no mass on the crop at all: every label of it alike


def test_the_photos_of_one_plant_combine_by_both_means():
    rows = [np.array([0.9, 0.1, 0.0]), np.array([0.5, 0.25, 0.25])]
    assert combine(rows, "mean_probability") == pytest.approx([0.7, 0.175, 0.125])
    geometric = combine(rows)  # the served way: a label one photo rules out stays (almost) out
    assert geometric[2] < 1e-5 and geometric.sum() == pytest.approx(1.0) and geometric.argmax() == 0
    assert combine(rows[:1]) == pytest.approx(rows[0], abs=1e-6)
