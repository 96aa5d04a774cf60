"""The nested check that keeps a fold's pooled Youden threshold only where it beats 0.5 on
validation slides it did not see (:func:`wsi_mil.mil.thresholds.nested_rule`)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from wsi_mil.metrics.slide import choose_threshold
from wsi_mil.mil.thresholds import fold_thresholds, nested_rule


def _fold(
    name: str, n: int, neg: tuple[float, float], pos: tuple[float, float], rng: np.random.Generator
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n`` validation slides of one fold model: half negative scored in ``neg``, half positive
    in ``pos`` (uniform ranges of the positive probability)."""
    y = np.repeat([0, 1], n // 2)
    score = np.where(y == 1, rng.uniform(*pos, n), rng.uniform(*neg, n))
    return [f"{name}_{i}" for i in range(n)], y, np.stack([1 - score, score], axis=1)


def _pool(folds):
    ids = np.concatenate([np.array(f[0]) for f in folds])
    y = np.concatenate([f[1] for f in folds])
    p = np.concatenate([f[2] for f in folds])
    source = np.concatenate([np.full(len(f[0]), i) for i, f in enumerate(folds)])
    return ids, y, p, source


def test_keeps_youden_when_every_fold_model_scores_low():
    # every model ranks well but scores everything below 0.5: 0.5 calls all slides negative
    rng = np.random.default_rng(0)
    folds = [_fold(f"f{k}", 20, (0.05, 0.2), (0.25, 0.4), rng) for k in range(4)]
    ids, y, p, source = _pool(folds)
    youden = choose_threshold(y, p)
    threshold, rule = nested_rule(ids, y, p, source, 0, youden, "Youden's J on pooled")
    assert threshold == youden and 0.2 < threshold < 0.25
    assert rule.startswith("Youden's J on pooled; nested check over 4 held-out")
    assert "balanced accuracy 1.000 with Youden's J, 0.500 with 0.5" in rule


def test_falls_back_to_half_when_the_fold_models_disagree_in_scale():
    # each model separates its slides at 0.5, but one scores high and one low: a cut taken
    # from one model's scores misjudges the other's
    rng = np.random.default_rng(1)
    high = _fold("h", 20, (0.3, 0.45), (0.8, 0.95), rng)
    low = _fold("l", 20, (0.05, 0.2), (0.55, 0.7), rng)
    ids, y, p, source = _pool([high, low])
    youden = choose_threshold(y, p)
    threshold, rule = nested_rule(ids, y, p, source, 0, youden, "Youden's J on pooled")
    assert threshold == 0.5
    assert rule.startswith("0.5: nested check over 2 held-out validation folds")
    # the figures in the rule are the held-out folds' balanced accuracies, recomputed here
    held_youden, held_half, truth = [], [], []
    for g in range(2):
        rest = source != g
        cut = choose_threshold(y[rest], p[rest])
        truth.append(y[source == g])
        held_youden.append(p[source == g, 1] >= cut)
        held_half.append(p[source == g, 1] >= 0.5)
    t = np.concatenate(truth)
    score_youden = balanced_accuracy_score(t, np.concatenate(held_youden))
    assert score_youden < 1.0
    assert f"balanced accuracy {score_youden:.3f} with Youden's J, 1.000 with 0.5" in rule


def test_a_held_out_slide_is_never_in_the_pool_that_judges_it():
    # slide "s" is in the validation of folds 0 and 1 (another fold's test slide, say): when
    # fold 0 is held out, fold 1's row of "s" must not choose the cut either
    rng = np.random.default_rng(2)
    folds = [_fold(f"f{k}", 10, (0.05, 0.2), (0.25, 0.4), rng) for k in range(3)]
    folds[1] = (["f0_0", *folds[1][0][1:]], folds[1][1], folds[1][2])
    ids, y, p, source = _pool(folds)
    calls = []
    import wsi_mil.mil.thresholds as thresholds

    original = thresholds.choose_threshold

    def spy(y_rest, p_rest, negative_index=0):
        calls.append(len(y_rest))
        return original(y_rest, p_rest, negative_index)

    thresholds.choose_threshold = spy
    try:
        nested_rule(ids, y, p, source, 0, 0.22, "Youden")
    finally:
        thresholds.choose_threshold = original
    # held out fold 0 (10 rows): rest is 20 rows minus fold 1's copy of f0_0 -> 19
    assert calls == [19, 19, 20]


def test_a_single_source_fold_keeps_the_pooled_youden_cut():
    rng = np.random.default_rng(3)
    ids, y, p, source = _pool([_fold("f0", 20, (0.3, 0.45), (0.8, 0.95), rng)])
    assert nested_rule(ids, y, p, source, 0, 0.6, "Youden") == (
        0.6,
        "Youden; no nested check (one validation fold)",
    )


@pytest.mark.parametrize("negative_index", [0, 1])
def test_fold_thresholds_apply_the_check_per_fold(negative_index):
    rng = np.random.default_rng(4)
    folds = [_fold(f"f{k}", 40, (0.05, 0.2), (0.25, 0.4), rng) for k in range(3)]
    if negative_index == 1:  # column 1 is the negative class: flip labels and columns
        folds = [(i, 1 - y, p[:, ::-1]) for i, y, p in folds]
    chosen = fold_thresholds(
        [f[0] for f in folds],
        [f[1] for f in folds],
        [f[2] for f in folds],
        [f[0][:5] for f in folds],
        [0, 1, 2],
        negative_index,
        min_per_class=20,
    )
    for decision in chosen:
        assert decision.rule.startswith("Youden's J on pooled validation")
        assert "nested check over 3 held-out validation folds" in decision.rule
        assert 0.2 < decision.threshold < 0.25


def test_without_the_check_the_pool_youden_cut_stands():
    # two models that disagree in scale: the check picks 0.5, switched off the pool's cut stays
    rng = np.random.default_rng(1)
    folds = [
        _fold("h", 20, (0.3, 0.45), (0.8, 0.95), rng),
        _fold("l", 20, (0.05, 0.2), (0.55, 0.7), rng),
    ]
    args = ([f[0] for f in folds], [f[1] for f in folds], [f[2] for f in folds], [[], []])
    checked = fold_thresholds(*args, [0, 1], 0, min_per_class=10)
    plain = fold_thresholds(*args, [0, 1], 0, min_per_class=10, nested_check=False)
    _, y, p, _ = _pool(folds)
    for with_check, without in zip(checked, plain, strict=True):
        assert with_check.threshold == 0.5 and "nested check over 2" in with_check.rule
        assert without.threshold == pytest.approx(choose_threshold(y, p))
        assert "nested check" not in without.rule


def test_the_rules_count_the_run_s_bags():
    """A patient-level run's pool holds patients: its rules say so (slides by default)."""
    rng = np.random.default_rng(2)
    folds = [_fold(f"p{k}", 40, (0.05, 0.2), (0.25, 0.4), rng) for k in range(3)]
    args = ([f[0] for f in folds], [f[1] for f in folds], [f[2] for f in folds], [[]] * 3)
    youden = fold_thresholds(*args, [0, 1, 2], 0, min_per_class=20, unit="patients")
    floor = fold_thresholds(*args, [0, 1, 2], 0, min_per_class=100, unit="patients")
    assert youden[0].rule.startswith(
        "Youden's J on pooled validation (60 negative / 60 positive patients)"
    )
    assert floor[0].rule == (
        "0.5: pooled validation has 60 negative / 60 positive patients, fewer than 100 of a class"
    )
    assert "positive slides" in fold_thresholds(*args, [0, 1, 2], 0, min_per_class=20)[0].rule
