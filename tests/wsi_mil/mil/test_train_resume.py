"""``train_folds(resume=True)``: complete folds of the same training are kept, not retrained."""

from __future__ import annotations

import json

from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.train import finished_fold, train_folds
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


def test_resume_keeps_complete_folds_and_retrains_the_rest(tmp_path, device):
    features, labels = write_planted_bags(tmp_path, planted_bags(16, 12, 8, seed=1))
    params = TrainParams(
        folds=2,
        epochs=2,
        min_epochs=1,
        patience=1,
        bootstrap=0,
        hidden_dims=(16,),
        attention_dim=8,
        device=device,
    )
    run = tmp_path / "run"
    first = train_folds(features, labels, run, params)
    fold0, fold1 = run / "fold_0", run / "fold_1"
    assert finished_fold(fold0) is not None
    kept = (fold0 / "model.pt").stat().st_mtime_ns
    (fold1 / "training.json").unlink()  # as if killed while writing fold 1

    second = train_folds(features, labels, run, params, resume=True)
    assert (fold0 / "model.pt").stat().st_mtime_ns == kept
    assert finished_fold(fold1) is not None
    assert second["auc"]["values"] == first["auc"]["values"]
    assert json.loads((run / "summary.json").read_text())["n_folds"] == 2


def test_resume_retrains_when_the_settings_changed(tmp_path, device):
    features, labels = write_planted_bags(tmp_path, planted_bags(16, 12, 8, seed=1))
    params = TrainParams(
        folds=2,
        epochs=2,
        min_epochs=1,
        patience=1,
        bootstrap=0,
        hidden_dims=(16,),
        attention_dim=8,
        device=device,
    )
    run = tmp_path / "run"
    train_folds(features, labels, run, params)
    kept = (run / "fold_0" / "model.pt").stat().st_mtime_ns
    train_folds(
        features,
        labels,
        run,
        TrainParams(**{**params.to_dict(), "hidden_dims": (8,), "lr": 1e-3}),
        resume=True,
    )
    assert (run / "fold_0" / "model.pt").stat().st_mtime_ns != kept
