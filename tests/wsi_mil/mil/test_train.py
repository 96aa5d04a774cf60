"""Training: gated attention-MIL finds planted positive tiles from slide labels alone, and a
run folder is written as the contract says."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from wsi_mil.mil.bags import BagDataset
from wsi_mil.mil.models import create_model
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.train import class_weights, train_fold, train_run
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags

FAST = {"hidden_dims": (32,), "attention_dim": 16, "lr": 2e-3, "device": "cpu", "bootstrap": 50}


def dataset(bags):
    return BagDataset.from_arrays([b.features for b in bags], [b.label for b in bags],
                                  [b.slide_id for b in bags])


def test_gated_abmil_learns_planted_tiles_weakly():
    bags = planted_bags(90, (30, 60), 24, planted_fraction=0.1, shift=3.0, seed=0)
    train, val, test = bags[:60], bags[60:70], bags[70:]
    params = TrainParams(epochs=12, patience=12, **FAST)
    torch.manual_seed(0)
    model = create_model("gated_abmil", 24, 2, **params.model_kwargs())
    result = train_fold(model, dataset(train), dataset(val), params, negative_index=0, seed=0)
    model = result.model.eval()
    slide_scores, tile_scores, tile_truth = [], [], []
    with torch.no_grad():
        for bag in test:
            out = model(torch.from_numpy(bag.features))
            slide_scores.append(out.logits.softmax(1)[0, 1].item())
            tile_scores += out.tile_logits.softmax(-1)[0, :, 1].tolist()
            tile_truth += bag.planted.tolist()
    slide_auc = roc_auc_score([b.label for b in test], slide_scores)
    tile_auc = roc_auc_score(tile_truth, tile_scores)
    assert slide_auc >= 0.95, slide_auc
    assert tile_auc >= 0.9, tile_auc


def test_train_run_writes_the_run_folder(tmp_path):
    bags = planted_bags(24, (10, 20), 8, shift=4.0, seed=1)
    features_dir, labels_csv = write_planted_bags(tmp_path, bags, with_tile_labels=True)
    params = TrainParams(folds=3, epochs=2, min_epochs=1, model="clam_sb", k_sample=3, **FAST)
    summary = train_run(features_dir, labels_csv, tmp_path / "run", params)
    run = tmp_path / "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["model"] == "clam_sb" and config["class_names"] == ["neg", "pos"]
    assert config["negative_class"] == "neg" and config["in_dim"] == 8
    assert len((run / "splits.csv").read_text().splitlines()) == 1 + 3 * 24
    for k in range(3):
        fold = run / f"fold_{k}"
        meta = json.loads((fold / "model.json").read_text())
        assert meta["model"] == "clam_sb" and meta["kwargs"]["k_sample"] == 3
        state = torch.load(fold / "model.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["n_slides"] == len((fold / "test_predictions.csv").read_text()
                                          .splitlines()) - 1
        assert 0 <= metrics["threshold"] <= 1
        log = (fold / "log.csv").read_text().splitlines()
        assert log[0].startswith("epoch,lr,train_loss") and len(log) == 3
    assert summary["n_folds"] == 3 and len(summary["accuracy"]["values"]) == 3
    saved = json.loads((run / "summary.json").read_text())
    assert saved["accuracy"]["mean"] == pytest.approx(np.mean(saved["accuracy"]["values"]))
    assert saved["pooled_out_of_fold"]["n_slides"] == 24


def test_params_reject_invalid_settings():
    with pytest.raises(ValueError, match="TrainParams.model = 'not_a_model'"):
        TrainParams(model="not_a_model")
    assert TrainParams(hidden_dims=[64, 32]).hidden_dims == (64, 32)


def test_class_weights_balance_classes():
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights[1] / weights[0] == pytest.approx(3.0)
