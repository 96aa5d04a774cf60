"""Model selection on the slide-level validation loss from ``min_epochs`` on, attention entropy
per epoch, and per-fold decision thresholds from pooled validation predictions that never hold
the fold's own test slides."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from wsi_mil.metrics.slide import choose_threshold
from wsi_mil.mil.bags import BagDataset
from wsi_mil.mil.models import create_model
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.train import TrainingError, train_fold, train_folds
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


@pytest.fixture
def small(device) -> dict:
    """Small training settings on the test device (``WSI_MIL_TEST_DEVICE``)."""
    return {"hidden_dims": (16,), "attention_dim": 8, "lr": 2e-3, "device": device, "bootstrap": 0}


def dataset(bags):
    return BagDataset.from_arrays(
        [b.features for b in bags], [b.label for b in bags], [b.slide_id for b in bags]
    )


def test_selection_watches_the_slide_loss_and_skips_early_epochs(small):
    bags = planted_bags(40, (8, 16), 12, shift=2.0, seed=3)
    params = TrainParams(epochs=8, min_epochs=4, patience=100, seg_weight=1.0, **small)
    torch.manual_seed(0)
    model = create_model("gated_abmil", 12, 2, **params.model_kwargs())
    result = train_fold(model, dataset(bags[:30]), dataset(bags[30:]), params, 0, seed=0)
    slide_loss = np.array([row["val_slide_loss"] for row in result.log])
    total_loss = np.array([row["val_loss"] for row in result.log])
    assert (total_loss > slide_loss).all()  # the head's pseudo-label loss is in val_loss only
    assert result.best_epoch == 3 + int(np.argmin(slide_loss[3:]))
    assert not any(row["best"] for row in result.log[:3])


def test_log_has_attention_entropy_per_epoch(small):
    bags = planted_bags(12, (3, 9), 6, seed=4)
    params = TrainParams(model="mean_pool", epochs=2, min_epochs=1, **small)
    model = create_model("mean_pool", 6, 2, **params.model_kwargs())
    result = train_fold(model, dataset(bags[:8]), dataset(bags[8:]), params, 0, seed=0)
    # mean pooling attends uniformly: the entropy of a bag of N tiles is ln N, normalised 1
    expected = np.mean([math.log(len(b.features)) for b in bags[8:]])
    for row in result.log:
        assert row["val_attention_entropy"] == pytest.approx(expected, abs=1e-5)
        assert row["val_attention_entropy_norm"] == pytest.approx(1.0, abs=1e-5)
        assert row["train_attention_entropy"] > 0


def _read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("min_per_class", [1, 1000])
def test_each_fold_threshold_never_sees_its_own_test_slides(tmp_path, min_per_class, small):
    bags = planted_bags(24, (6, 12), 8, shift=1.0, seed=5)
    features, labels = write_planted_bags(tmp_path, bags)
    params = TrainParams(
        folds=3, epochs=2, min_epochs=1, threshold_min_per_class=min_per_class, **small
    )
    summary = train_folds(features, labels, tmp_path / "run", params)
    run = tmp_path / "run"
    val_rows = [r for k in range(3) for r in _read(run / f"fold_{k}" / "val_predictions.csv")]
    splits = _read(run / "splits.csv")
    thresholds = []
    for k in range(3):
        fold = run / f"fold_{k}"
        test_ids = {r["slide_id"] for r in splits if r["fold"] == str(k) and r["role"] == "test"}
        metrics = json.loads((fold / "metrics.json").read_text())
        # the pool that chose fold k's threshold holds none of fold k's test slides ...
        assert metrics["threshold_pool"] and not test_ids & set(metrics["threshold_pool"])
        # ... and is every fold's validation predictions except those slides'
        pool = [r for r in val_rows if r["slide_id"] not in test_ids]
        assert set(metrics["threshold_pool"]) == {r["slide_id"] for r in pool}
        y = np.array([r["label"] == "pos" for r in pool], dtype=int)
        p = np.array([[float(r["prob_neg"]), float(r["prob_pos"])] for r in pool])
        if min_per_class == 1:
            # Youden's J on the pool, or 0.5 where the nested check on held-out validation
            # folds preferred it (tests/wsi_mil/mil/test_thresholds.py checks that choice)
            assert "nested check" in metrics["threshold_rule"]
            if metrics["threshold_rule"].startswith("Youden's J on pooled validation"):
                assert metrics["threshold"] == pytest.approx(choose_threshold(y, p), abs=1e-5)
            else:
                assert metrics["threshold"] == 0.5
        else:
            assert metrics["threshold"] == 0.5 and "fewer than 1000" in metrics["threshold_rule"]
        assert json.loads((fold / "model.json").read_text())["threshold"] == metrics["threshold"]
        assert summary["thresholds"][k]["threshold"] == metrics["threshold"]
        for row in _read(fold / "test_predictions.csv"):
            positive = float(row["prob_pos"]) >= metrics["threshold"]
            assert row["predicted_label"] == ("pos" if positive else "neg")
        thresholds.append(metrics["threshold"])
    clipped = np.clip(thresholds, 1e-7, 1 - 1e-7)  # a threshold of 1 has no finite logit
    logits = np.log(clipped / (1 - clipped))
    assert summary["ensemble_threshold"] == pytest.approx(1 / (1 + np.exp(-logits.mean())))


def test_a_fold_whose_validation_is_all_nan_fails_clearly(small):
    bags = planted_bags(12, (3, 6), 6, seed=4)
    params = TrainParams(epochs=2, min_epochs=1, **small)
    model = create_model("gated_abmil", 6, 2, **params.model_kwargs())
    with torch.no_grad():  # a diverged model: every logit, loss and score is NaN
        for weight in model.parameters():
            weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="every validation score .* was NaN"):
        train_fold(model, dataset(bags[:8]), dataset(bags[8:]), params, 0, seed=0)
