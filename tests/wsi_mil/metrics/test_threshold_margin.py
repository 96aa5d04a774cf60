"""The validation threshold lies between the classes, not on the lowest positive score."""

from __future__ import annotations

import numpy as np

from wsi_mil.metrics.slide import choose_threshold, predict_indices


def test_separable_validation_leaves_a_margin_for_unseen_slides():
    # Saturated probabilities, as a confident model gives: validation is perfectly separated.
    y_val = np.array([0, 1, 1])
    p_val = np.array([[0.997, 0.003], [0.0028, 0.9972], [0.001, 0.999]])
    threshold = choose_threshold(y_val, p_val)
    assert 0.003 < threshold < 0.9972
    unseen = np.array([[0.0034, 0.9966], [0.996, 0.004]])  # a tumour a hair below validation's
    assert predict_indices(unseen, threshold).tolist() == [1, 0]
