"""Prediction from a run: per-fold and ensemble, chunked reading, the predictions contract."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from wsi_mil.mil.predict import PredictParams, RunError, load_run, predict_bag
from wsi_mil.mil.predictions import read_prediction
from wsi_mil.mil.train import TrainParams, train_run
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    bags = planted_bags(16, (5, 40), 8, shift=4.0, seed=2)
    features_dir, labels_csv = write_planted_bags(root, bags)
    params = TrainParams(folds=2, epochs=2, min_epochs=1, hidden_dims=(16,), attention_dim=8,
                         bootstrap=0, device="cpu")
    train_run(features_dir, labels_csv, root / "run", params)
    return root, features_dir, labels_csv


def test_single_fold_prediction_matches_the_model(trained):
    root, features_dir, _ = trained
    run = load_run(root / "run", fold=1, device="cpu")
    bag = features_dir / "slide_0003.h5"
    pred = predict_bag(run, bag, chunk_size=4)
    with h5py.File(bag) as f:
        x = torch.from_numpy(f["features"][:]).float()
        coords = f["coords"][:]
    with torch.no_grad():
        out = run.folds[0].model(x)
    np.testing.assert_allclose(pred.probs, out.logits.softmax(1)[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.attention, out.raw_attention[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.tile_probs, out.tile_logits.softmax(-1)[0].numpy(),
                               atol=1e-5)
    np.testing.assert_array_equal(pred.coords, coords)
    assert pred.attention_norm.min() == 0.0 and pred.attention_norm.max() == 1.0
    assert pred.slide_id == "slide_0003" and pred.class_names == ["neg", "pos"]
    assert pred.attrs["tile_size"] == 224 and pred.attrs["slide_mpp"] == 0.5
    assert pred.attrs["folds"] == [1] and pred.attrs["negative_class"] == "neg"


def test_ensemble_averages_folds(trained):
    root, features_dir, _ = trained
    bag = features_dir / "slide_0005.h5"
    ensemble = predict_bag(load_run(root / "run", device="cpu"), bag)
    folds = [predict_bag(load_run(root / "run", fold=k, device="cpu"), bag) for k in (0, 1)]
    np.testing.assert_allclose(ensemble.probs, np.mean([f.probs for f in folds], 0), atol=1e-6)
    np.testing.assert_allclose(ensemble.tile_probs, np.mean([f.tile_probs for f in folds], 0),
                               atol=1e-6)
    assert ensemble.attrs["folds"] == [0, 1]
    assert ensemble.attrs["checkpoint_sha256"] not in {f.attrs["checkpoint_sha256"]
                                                       for f in folds}


def test_run_errors(tmp_path, trained):
    root, _, _ = trained
    with pytest.raises(RunError, match="not a wsi-mil run"):
        load_run(tmp_path)
    with pytest.raises(RunError, match="no fold_7"):
        load_run(root / "run", fold=7)


def test_predict_slides_writes_contract_and_records_failures(tmp_path, trained):
    from wsi_mil.pipeline.predict import predict_slides

    root, features_dir, labels_csv = trained
    wide = write_planted_bags(tmp_path / "wide", planted_bags(1, 6, 12, prefix="wide"))[0]
    (wide / "wide_0000.h5").rename(features_dir.parent / "wide_0000.h5")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in list(features_dir.glob("*.h5"))[:3] + [features_dir.parent / "wide_0000.h5"]:
        (mixed / path.name).symlink_to(path)
    out = tmp_path / "pred"
    result = predict_slides(root / "run", mixed, out, PredictParams(device="cpu"),
                            labels_csv=labels_csv)
    assert len(result.done) == 3 and [s for s, _ in result.failed] == ["wide_0000"]
    assert "12 features per tile" in (out / "failures.csv").read_text()
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "slide_id,label,predicted_label,prob_neg,prob_pos" and len(rows) == 4
    pred = read_prediction(out / "predictions" / f"{rows[1].split(',')[0]}.h5")
    assert pred.tile_probs.shape[1] == 2
    again = predict_slides(root / "run", mixed, out, PredictParams(device="cpu"))
    assert len(again.skipped) == 3 and len(again.failed) == 1
