"""DeLong's test against an example worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.auc_comparison import delong_test, structural_components

# three positive slides then two negative ones
TRUTH = np.array([True, True, True, False, False])
A = np.array([0.9, 0.6, 0.4, 0.5, 0.3])
B = np.array([0.8, 0.2, 0.7, 0.6, 0.3])


def test_structural_components_by_hand() -> None:
    auc, v10, v01 = structural_components(A, TRUTH)
    # 0.9 and 0.6 beat both negatives, 0.4 beats one; 0.5 is below two positives, 0.3 three
    np.testing.assert_allclose(v10, [1, 1, 0.5])
    np.testing.assert_allclose(v01, [2 / 3, 1])
    assert auc == pytest.approx(2.5 / 3)
    tied = structural_components(np.array([0.5, 0.5]), np.array([True, False]))
    assert tied[0] == 0.5  # a tie counts one half


def test_delong_by_hand() -> None:
    result = delong_test(A, B, TRUTH)
    # AUC B: V10 = [1, 0, 1], V01 = [2/3, 2/3]; difference 5/6 - 2/3 = 1/6
    assert result["auc_b"] == pytest.approx(2 / 3)
    assert result["difference"] == pytest.approx(1 / 6)
    # S10 contrast: var(a) 1/12 + var(b) 1/3 - 2 cov -1/12 = 7/12, over m = 3;
    # S01 contrast: var(a) 1/18 + 0 - 0, over n = 2; total 7/36 + 1/36 = 2/9
    assert result["se"] == pytest.approx(math.sqrt(2 / 9))
    assert result["z"] == pytest.approx(1 / (2 * math.sqrt(2)))
    assert result["p_value"] == pytest.approx(0.72367, abs=1e-4)
    low, high = result["ci95"]
    assert (low + high) / 2 == pytest.approx(1 / 6)
    assert high - low == pytest.approx(2 * 1.959964 * math.sqrt(2 / 9), rel=1e-5)


def test_same_scores_no_difference_and_too_few_slides() -> None:
    same = delong_test(A, A, TRUTH)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="at least 2 positive"):
        delong_test(A[:4], B[:4], np.array([True, False, False, False]))
