"""Prediction from a run: per-fold and ensemble, chunked reading, the predictions contract."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from wsi_mil.mil.params import PredictParams, TrainParams
from wsi_mil.mil.predict import RunError, load_run, predict_bag
from wsi_mil.mil.predictions import read_prediction
from wsi_mil.mil.train import train_run
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


@pytest.fixture(scope="module")
def trained(tmp_path_factory, device):
    root = tmp_path_factory.mktemp("run")
    bags = planted_bags(16, (5, 40), 8, shift=4.0, seed=2)
    features_dir, labels_csv = write_planted_bags(root, bags)
    params = TrainParams(folds=2, epochs=2, min_epochs=1, hidden_dims=(16,), attention_dim=8,
                         bootstrap=0, device=device)
    train_run(features_dir, labels_csv, root / "run", params)
    return root, features_dir, labels_csv


def test_single_fold_prediction_matches_the_model(trained, device):
    root, features_dir, _ = trained
    run = load_run(root / "run", fold=1, device=device)
    bag = features_dir / "slide_0003.h5"
    pred = predict_bag(run, bag, chunk_size=4)
    with h5py.File(bag) as f:
        x = torch.from_numpy(f["features"][:]).float().to(device)
        coords = f["coords"][:]
    with torch.no_grad():
        out = run.folds[0].model(x)
    np.testing.assert_allclose(pred.probs, out.logits.softmax(1)[0].cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.attention, out.raw_attention[0].cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.tile_probs, out.tile_logits.softmax(-1)[0].cpu().numpy(),
                               atol=1e-5)
    np.testing.assert_array_equal(pred.coords, coords)
    assert pred.attention_norm.min() == 0.0 and pred.attention_norm.max() == 1.0
    assert pred.slide_id == "slide_0003" and pred.class_names == ["neg", "pos"]
    assert pred.attrs["tile_size"] == 224 and pred.attrs["slide_mpp"] == 0.5
    assert pred.attrs["folds"] == [1] and pred.attrs["negative_class"] == "neg"


def test_ensemble_averages_folds(trained, device):
    root, features_dir, _ = trained
    bag = features_dir / "slide_0005.h5"
    ensemble = predict_bag(load_run(root / "run", device=device), bag, oof=False)
    folds = [predict_bag(load_run(root / "run", fold=k, device=device), bag) for k in (0, 1)]
    np.testing.assert_allclose(ensemble.probs, np.mean([f.probs for f in folds], 0), atol=1e-6)
    np.testing.assert_allclose(ensemble.tile_probs, np.mean([f.tile_probs for f in folds], 0),
                               atol=1e-6)
    assert ensemble.attrs["folds"] == [0, 1] and ensemble.attrs["in_sample"]
    assert ensemble.attrs["checkpoint_sha256"] not in {f.attrs["checkpoint_sha256"]
                                                       for f in folds}


def test_run_errors(tmp_path, trained):
    root, _, _ = trained
    with pytest.raises(RunError, match="not a wsi-mil run"):
        load_run(tmp_path)
    with pytest.raises(RunError, match="no fold_7"):
        load_run(root / "run", fold=7)


def test_predict_slides_writes_contract_and_records_failures(tmp_path, trained, device):
    from wsi_mil.pipeline.predict import predict_slides

    root, features_dir, labels_csv = trained
    wide = write_planted_bags(tmp_path / "wide", planted_bags(1, 6, 12, prefix="wide"))[0]
    (wide / "wide_0000.h5").rename(features_dir.parent / "wide_0000.h5")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in list(features_dir.glob("*.h5"))[:3] + [features_dir.parent / "wide_0000.h5"]:
        (mixed / path.name).symlink_to(path)
    out = tmp_path / "pred"
    result = predict_slides(root / "run", mixed, out, PredictParams(device=device),
                            labels_csv=labels_csv)
    assert len(result.done) == 3 and [s for s, _ in result.failed] == ["wide_0000"]
    assert "12 features per tile" in (out / "failures.csv").read_text()
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "slide_id,label,predicted_label,in_sample,prob_neg,prob_pos"
    assert len(rows) == 4
    pred = read_prediction(out / "predictions" / f"{rows[1].split(',')[0]}.h5")
    assert pred.tile_probs.shape[1] == 2
    again = predict_slides(root / "run", mixed, out, PredictParams(device=device))
    assert len(again.skipped) == 3 and len(again.failed) == 1


def test_ensemble_attention_of_offset_raw_scores_equals_either_fold():
    from wsi_mil.metrics.explain import attention_weights
    from wsi_mil.mil.predict import ensemble_attention

    raw = np.array([0.3, -1.2, 2.5, 0.0], dtype=np.float32)
    attention, norm = ensemble_attention([raw, raw + 10.0])  # same ranking, another offset
    _, single_norm = ensemble_attention([raw])
    np.testing.assert_allclose(norm, single_norm, atol=1e-6)
    np.testing.assert_allclose(attention_weights(attention), attention_weights(raw), atol=1e-6)
    # a fold whose raw scale differs counts as much as the other in the normalised map
    _, norm = ensemble_attention([raw, raw * 5.0])
    np.testing.assert_allclose(norm, single_norm, atol=1e-6)


def test_own_slides_are_predicted_out_of_fold_by_default(trained, device):
    from wsi_mil.mil.predict import read_roles

    root, features_dir, _ = trained
    roles = read_roles(root / "run" / "splits.csv")
    run = load_run(root / "run", device=device)
    for bag in sorted(features_dir.glob("*.h5"))[:4]:
        held_out = [k for k, role in roles[bag.stem].items() if role == "test"]
        pred = predict_bag(run, bag)
        assert pred.attrs["folds"] == held_out and not pred.attrs["in_sample"]
        assert pred.attrs["out_of_fold"]
        forced = predict_bag(run, bag, oof=False)
        assert forced.attrs["folds"] == [0, 1] and forced.attrs["in_sample"]


def test_oof_required_fails_a_slide_no_fold_held_out(tmp_path, trained, device):
    root, _, _ = trained
    stranger = write_planted_bags(tmp_path, planted_bags(1, 6, 8, prefix="new"))[0]
    run = load_run(root / "run", device=device)
    bag = next(stranger.glob("*.h5"))
    assert not predict_bag(run, bag).attrs["in_sample"]  # unseen: the whole ensemble
    with pytest.raises(RunError, match="no out-of-fold prediction"):
        predict_bag(run, bag, oof=True)


def test_evaluate_warns_on_in_sample_predictions(tmp_path, trained, device):
    from wsi_mil.pipeline.evaluate import evaluate_predictions
    from wsi_mil.pipeline.predict import predict_slides

    root, features_dir, labels_csv = trained
    predict_slides(root / "run", features_dir, tmp_path / "in", PredictParams(device=device,
                                                                              oof=False))
    with pytest.warns(UserWarning, match="in-sample and optimistic"):
        metrics = evaluate_predictions(tmp_path / "in", labels_csv, n_boot=0)
    assert len(metrics["in_sample_slides"]) == 16
    predict_slides(root / "run", features_dir, tmp_path / "oof", PredictParams(device=device))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert evaluate_predictions(tmp_path / "oof", labels_csv, n_boot=0)["in_sample_slides"] == []
