"""Drop one and keep one against the model run on every left-out bag by hand; the bag scorer
against the model on the subset bags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_mil.explain.methods import ExplainError, explain
from wsi_mil.explain.perturbation import bag_scorer, drop_one, keep_one
from wsi_mil.mil.models import create_model


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(2)
    return create_model(name, 8, 2, hidden_dims=(16,), dropout=0.0).eval()


def _logit(model, x, target=1) -> float:
    with torch.no_grad():
        return float(model(x).logits[0, target])


@pytest.mark.parametrize(
    "name", ["gated_abmil", "clam_mb", "mean_pool", "max_pool", "transformer_mil", "transmil"]
)
def test_drop_one_equals_the_hand_computed_left_out_bags(name):
    model, x = _model(name), torch.randn(5, 8)
    by_hand = [_logit(model, x) - _logit(model, torch.cat([x[:i], x[i + 1 :]])) for i in range(5)]
    np.testing.assert_allclose(drop_one(model, x, None, 1), by_hand, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        explain(model, x, "perturbation", target=1), by_hand, rtol=1e-4, atol=1e-5
    )


def test_drop_one_of_a_dominant_tile_is_exact():
    """A tile holding over half the attention: (S - e_i h_i) / (Z - e_i) would cancel, so it is
    recomputed directly."""
    model, x = _model("gated_abmil"), torch.randn(6, 8)
    with torch.no_grad():
        model.attention.w.weight *= 300  # sharp attention: one tile takes nearly all of it
        assert float(model(x).attention.max()) > 0.99
    by_hand = [_logit(model, x) - _logit(model, torch.cat([x[:i], x[i + 1 :]])) for i in range(6)]
    np.testing.assert_allclose(drop_one(model, x, None, 1), by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["gated_abmil", "clam_mb", "max_pool", "transformer_mil", "transmil"]
)
def test_keep_one_is_each_tile_alone_against_a_zero_tile(name):
    """The one-tile bags run as a batch through the transformers' layers: each equals the
    model on that tile alone (TransMIL to 1e-3: the Nyström package starts its iterative
    pseudo-inverse from the batch's largest row and column sums, measured 2e-4 apart)."""
    model, x = _model(name), torch.randn(5, 8)
    zero = _logit(model, torch.zeros(1, 8))
    by_hand = [_logit(model, x[i : i + 1]) - zero for i in range(5)]
    atol = 1e-3 if name == "transmil" else 1e-5
    np.testing.assert_allclose(keep_one(model, x, None, 1), by_hand, rtol=1e-4, atol=atol)


def test_one_tile_bag_drops_to_the_zero_bag():
    model, x = _model("gated_abmil"), torch.randn(1, 8)
    assert drop_one(model, x, None, 1)[0] == pytest.approx(
        _logit(model, x) - _logit(model, torch.zeros(1, 8)), abs=1e-5
    )


def test_transformer_perturbation_is_bounded():
    with pytest.raises(ExplainError, match="max_perturbation_tiles"):
        explain(
            _model("transformer_mil"), np.zeros((30, 8)), "perturbation", max_perturbation_tiles=20
        )


@pytest.mark.parametrize("name", ["gated_abmil", "clam_mb", "max_pool", "transformer_mil"])
def test_bag_scorer_scores_subsets_and_the_empty_bag(name):
    model, x = _model(name), torch.randn(7, 8)
    score = bag_scorer(model, x, None, 1, max_batch_values=40)  # forces several batches
    subsets = [
        np.array([0, 3, 4]),
        np.array([6]),
        np.arange(7),
        np.array([], dtype=int),
        np.array([0, 3, 4]),
    ]
    with torch.no_grad():
        expected = [
            float(model(x[s] if len(s) else torch.zeros_like(x)).logits.softmax(1)[0, 1])
            for s in subsets
        ]
    np.testing.assert_allclose(score(subsets), expected, rtol=1e-5, atol=1e-6)


def test_keep_one_batch_keeps_the_position_of_a_one_tile_bag():
    torch.manual_seed(4)
    model = create_model(
        "transformer_mil", 8, 2, hidden_dims=(16,), dropout=0.0, positional="sincos2d"
    ).eval()
    x, coords = torch.randn(5, 8), torch.randint(0, 9, (5, 2)).float()
    with torch.no_grad():
        zero = float(model(torch.zeros(1, 8), coords=coords[:1]).logits[0, 1])
        by_hand = [
            float(model(x[i : i + 1], coords=coords[i : i + 1]).logits[0, 1]) - zero
            for i in range(5)
        ]
    np.testing.assert_allclose(keep_one(model, x, coords, 1), by_hand, rtol=1e-4, atol=1e-5)
