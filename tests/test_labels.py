"""Labels: ranking the model's scores, splitting a label into species and condition."""

from __future__ import annotations

import numpy as np
import pytest

from util import labels


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
