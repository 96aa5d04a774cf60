"""Agreement of raters against kappa values computed by hand (and one published example)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.agreement import agreement, cohen_quadratic_kappa, fleiss_kappa


def test_cohen_quadratic_by_hand() -> None:
    # A = 1 2 3 4 5, B = 1 2 3 5 5; weights (i - j)^2 / 16.
    # observed: one (4, 5) pair -> sum w O = 1/16.
    # expected E_ij = 1 * colB_j / 5 with colB = (1, 1, 1, 0, 2); sum_i (i - j)^2 is 30, 15, 10
    # for j = 1, 2, 3 and 30 for j = 5 -> sum w E = (30 + 15 + 10 + 2 * 30) / 80 = 115 / 80.
    # kappa = 1 - (1/16) / (115/80) = 1 - 5/115 = 22/23.
    assert cohen_quadratic_kappa([1, 2, 3, 4, 5], [1, 2, 3, 5, 5]) == pytest.approx(22 / 23)
    assert cohen_quadratic_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # a full reversal of 1..5 is perfect disagreement: kappa -1
    assert cohen_quadratic_kappa([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(cohen_quadratic_kappa([3], [4]))


def test_fleiss_by_hand() -> None:
    # 3 raters, 4 slides: (1,1,1), (2,2,2), (1,1,2), (2,2,1).
    # P_i = (sum n_ij^2 - 3) / 6 = 1, 1, 1/3, 1/3 -> P = 2/3; p_1 = p_2 = 1/2 -> Pe = 1/2;
    # kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3.
    scores = np.array([[1, 1, 1], [2, 2, 2], [1, 1, 2], [2, 2, 1]])
    assert fleiss_kappa(scores) == pytest.approx(1 / 3)


def test_fleiss_published_example() -> None:
    """Fleiss' kappa of the worked example with 10 subjects, 14 raters, 5 categories: 0.210."""
    counts = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    scores = np.array([np.repeat(np.arange(1, 6), row) for row in counts])
    assert scores.shape == (10, 14)
    assert fleiss_kappa(scores) == pytest.approx(0.210, abs=5e-4)


def test_agreement_uses_common_slides() -> None:
    two = {
        "a": {
            "s1": {"q": 1},
            "s2": {"q": 2},
            "s3": {"q": 3},
            "s4": {"q": 4},
            "s5": {"q": 5},
            "only_a": {"q": 1},
        },
        "b": {"s1": {"q": 1}, "s2": {"q": 2}, "s3": {"q": 3}, "s4": {"q": 5}, "s5": {"q": 5}},
    }
    (row,) = agreement(two, ["q"])
    assert (row.method, row.n_common, row.n_raters) == ("cohen_quadratic", 5, 2)
    assert row.kappa == pytest.approx(22 / 23)
    three = {
        r: {f"s{i}": {"q": v} for i, v in enumerate(col)}
        for r, col in zip("xyz", np.array([[1, 1, 1], [2, 2, 2], [1, 1, 2], [2, 2, 1]]).T)
    }
    (row,) = agreement(three, ["q"])
    assert (row.method, row.n_common) == ("fleiss", 4) and row.kappa == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least 2 raters"):
        agreement({"a": two["a"]}, ["q"])
