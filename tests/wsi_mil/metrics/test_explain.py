"""Explainability metrics on attention maps whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_mil.metrics.explain import (
    attention_weights,
    lesion_attention_mass,
    perturbation_curve,
    pointing_game,
)

# 10 tiles, tiles 2, 3 and 4 are lesion (tile 4 only 40 % of it)
FRACTION = np.array([0, 0, 1, 1, 0.4, 0, 0, 0, 0, 0], dtype=float)
PERFECT = np.array([0, 0, 5, 4, 3, 0, 0, 0, 0, 0], dtype=float)  # lesion tiles ranked first
INVERTED = -PERFECT


def test_attention_weights_are_a_softmax() -> None:
    w = attention_weights(np.array([0.0, np.log(3.0)]))
    np.testing.assert_allclose(w, [0.25, 0.75])


def test_lesion_mass_perfect_inverted_uniform() -> None:
    only_lesion = (FRACTION == 1).astype(float)
    assert lesion_attention_mass(only_lesion, FRACTION).mass == pytest.approx(1.0)
    assert lesion_attention_mass(1 - (FRACTION > 0), FRACTION).mass == pytest.approx(0.0)
    uniform = lesion_attention_mass(np.ones(10), FRACTION)
    assert uniform.mass == pytest.approx(uniform.uniform) == pytest.approx(2.4 / 10)
    with pytest.raises(ValueError, match="non-negative"):
        lesion_attention_mass(INVERTED, FRACTION)


def test_pointing_game() -> None:
    perfect = pointing_game(PERFECT, FRACTION, k=3)
    assert perfect.hit and perfect.hit_at_k
    assert perfect.precision_at_k == pytest.approx(2 / 3)  # tile 4 is only 40 % lesion
    assert perfect.chance == pytest.approx(0.2)
    inverted = pointing_game(INVERTED, FRACTION, k=3)
    assert not inverted.hit and not inverted.hit_at_k and inverted.precision_at_k == 0.0
    loose = pointing_game(PERFECT, FRACTION, k=3, min_fraction=0.3)
    assert loose.precision_at_k == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs a slide with a lesion"):
        pointing_game(PERFECT, np.zeros(10))


def test_pointing_game_random_attention_hits_at_chance() -> None:
    rng = np.random.default_rng(0)
    fraction = (rng.random(200) < 0.25).astype(float)
    hits = [pointing_game(rng.random(200), fraction).hit for _ in range(2000)]
    assert np.mean(hits) == pytest.approx(fraction.mean(), abs=0.04)


def max_pool_model(fraction: np.ndarray):
    """A slide score that is the lesion share of the most lesion-like tile left in the bag."""
    return lambda subsets: [float(fraction[idx].max()) for idx in subsets]


def test_deletion_and_insertion_against_random() -> None:
    score = max_pool_model(FRACTION)
    good = perturbation_curve(PERFECT, score, "deletion", steps=10, n_random=20)
    bad = perturbation_curve(INVERTED, score, "deletion", steps=10, n_random=20)
    assert good.scores[0] == 1.0 and good.scores[-1] == 0.0
    # removing the 2 lesion tiles first (20 %) drops the score to 0.4 at once
    assert good.scores[2] == pytest.approx(0.4) and good.scores[3] == 0.0
    assert good.auc < good.random_auc < bad.auc
    assert good.random_auc == pytest.approx(bad.random_auc)  # same seed, same random orders
    ins_good = perturbation_curve(PERFECT, score, "insertion", steps=10, n_random=20)
    ins_bad = perturbation_curve(INVERTED, score, "insertion", steps=10, n_random=20)
    assert ins_good.scores[0] == 1.0  # the single most attended tile is lesion
    assert ins_good.auc > ins_good.random_auc > ins_bad.auc
    assert ins_good.fractions[0] == 0.0 and ins_good.fractions[-1] == 1.0


def test_perturbation_curve_uses_the_bag_subset() -> None:
    seen = []
    perturbation_curve(
        np.arange(4.0),
        lambda subsets: seen.extend(s.tolist() for s in subsets) or np.zeros(len(subsets)),
        "deletion",
        steps=4,
        n_random=1,
    )
    assert seen[:5] == [[0, 1, 2, 3], [0, 1, 2], [0, 1], [0], [0]]
    with pytest.raises(ValueError, match="kind"):
        perturbation_curve(np.arange(4.0), lambda subsets: np.zeros(len(subsets)), "sideways")


def test_run_score_fn_batches_equal_single_bags(device) -> None:
    """Padded, masked batches score each subset exactly as the model does on it alone."""
    from types import SimpleNamespace

    import torch

    from wsi_mil.metrics.explain import run_score_fn
    from wsi_mil.mil.models import create_model

    torch.manual_seed(0)
    models = [create_model("gated_abmil", 8, 2).to(device).eval() for _ in range(2)]
    run = SimpleNamespace(
        device=torch.device(device), folds=[SimpleNamespace(model=m) for m in models]
    )
    features = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    subsets = [np.arange(30), np.array([3]), np.array([0, 5, 29]), np.arange(10, 20)]
    # a tiny budget forces several batches
    scores = run_score_fn(run, features, 1, max_batch_values=8 * 30 * 2)(subsets)
    with torch.no_grad():
        bags = [torch.from_numpy(features[s]).to(device) for s in subsets]
        expected = [
            np.mean([m(bag).logits.softmax(1)[0, 1].item() for m in models]) for bag in bags
        ]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_run_score_fn_gives_each_subset_its_tiles_positions(device) -> None:
    """A model that uses the tiles' positions scores a subset with those tiles' own coords."""
    from types import SimpleNamespace

    import torch

    from wsi_mil.metrics.explain import run_score_fn
    from wsi_mil.mil.models import create_model

    torch.manual_seed(0)
    model = (
        create_model("transformer_mil", 8, 2, hidden_dims=(16,), dropout=0.0, positional="sincos2d")
        .to(device)
        .eval()
    )
    run = SimpleNamespace(device=torch.device(device), folds=[SimpleNamespace(model=model)])
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 8)).astype(np.float32)
    coords = np.stack([np.arange(30) % 6, np.arange(30) // 6], axis=1).astype(np.float32) + 9
    subsets = [np.arange(30), np.array([3]), np.array([0, 5, 29]), np.arange(10, 20)]
    scores = run_score_fn(run, features, 1, max_batch_values=8 * 30 * 2, coords=coords)(subsets)
    with torch.no_grad():
        expected = [
            model(
                torch.from_numpy(features[s]).to(device),
                coords=torch.from_numpy(coords[s]).to(device),
            )
            .logits.softmax(1)[0, 1]
            .item()
            for s in subsets
        ]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="without them"):
        run_score_fn(run, features, 1)(subsets)
