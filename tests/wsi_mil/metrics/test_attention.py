"""Attention entropy against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.attention import attention_entropy


def test_entropy_of_known_weights():
    assert attention_entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    assert attention_entropy([1.0, 0.0, 0.0]) == 0.0
    assert attention_entropy([1.0]) == 0.0 and attention_entropy([1.0], normalised=True) == 0.0
    # -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1), worked by hand: 0.24967 + 0.32189 + 0.23026
    assert attention_entropy([0.7, 0.2, 0.1]) == pytest.approx(0.801819, abs=1e-6)
    assert attention_entropy([0.7, 0.2, 0.1], normalised=True) == pytest.approx(
        0.801819 / 1.098612, abs=1e-6
    )


def test_uniform_attention_has_normalised_entropy_one():
    assert attention_entropy(np.full(8, 1 / 8)) == pytest.approx(math.log(8))
    assert attention_entropy(np.full(8, 1 / 8), normalised=True) == pytest.approx(1.0)


def test_weights_that_are_not_a_distribution_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        attention_entropy([0.5, 0.2])
    with pytest.raises(ValueError, match="at least one"):
        attention_entropy([])


def test_batched_entropies_equal_the_single_bag_form():
    import numpy as np

    from wsi_mil.metrics.attention import attention_entropies, attention_entropy

    rng = np.random.default_rng(0)
    weights = rng.random((4, 6))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [1, 0, 0, 0, 0, 0], [0] * 6], dtype=bool)
    weights[1, 2] = 0.0  # a zero weight contributes 0
    h, norm = attention_entropies(weights, mask)
    assert len(h) == 3  # the empty bag is left out
    for row, (bag, m) in enumerate(zip(weights[:3], mask[:3])):
        w = bag[m] / bag[m].sum()
        assert h[row] == pytest.approx(attention_entropy(w))
        assert norm[row] == pytest.approx(attention_entropy(w, normalised=True))
