"""Prediction from a run: per-fold and ensemble, chunked reading, the predictions contract."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from wsi_mil.mil.params import PredictParams, TrainParams
from wsi_mil.mil.predict import RunError, load_run, predict_bag, predict_slide
from wsi_mil.mil.predictions import REQUIRED_ATTRS, REQUIRED_DATASETS, read_prediction
from wsi_mil.mil.train import train_folds
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


@pytest.fixture(scope="module")
def trained(tmp_path_factory, device):
    root = tmp_path_factory.mktemp("run")
    bags = planted_bags(16, (5, 40), 8, shift=4.0, seed=2)
    features_dir, labels_csv = write_planted_bags(root, bags)
    params = TrainParams(
        folds=2,
        epochs=2,
        min_epochs=1,
        hidden_dims=(16,),
        attention_dim=8,
        bootstrap=0,
        device=device,
    )
    train_folds(features_dir, labels_csv, root / "run", params)
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
    np.testing.assert_allclose(
        pred.tile_probs, out.tile_logits.softmax(-1)[0].cpu().numpy(), atol=1e-5
    )
    np.testing.assert_array_equal(pred.coords, coords)
    assert pred.attention_norm.min() == 0.0 and pred.attention_norm.max() == 1.0
    assert pred.slide_id == "slide_0003" and pred.class_names == ["neg", "pos"]
    assert pred.attrs["tile_size"] == 224 and pred.attrs["slide_mpp"] == 0.5
    assert pred.attrs["folds"] == [1] and pred.attrs["negative_class"] == "neg"


def test_ensemble_combines_folds_in_log_odds(trained, device):
    root, features_dir, _ = trained
    bag = features_dir / "slide_0005.h5"
    ensemble = predict_bag(load_run(root / "run", device=device), bag, oof=False)
    folds = [predict_bag(load_run(root / "run", fold=k, device=device), bag) for k in (0, 1)]
    # two classes: the ensemble's logit is the mean of the folds' logits ...
    logits = [np.log(f.probs[1] / f.probs[0]) for f in folds]
    assert np.log(ensemble.probs[1] / ensemble.probs[0]) == pytest.approx(np.mean(logits), abs=1e-5)
    # ... and its threshold's logit the mean of the folds' thresholds' logits, so it calls the
    # slide positive exactly when the folds' log-odds exceed their thresholds' on average
    t = [f.attrs["threshold"] for f in folds]
    assert [f.attrs["threshold"] for f in folds] == [
        json.loads((root / "run" / f"fold_{k}" / "model.json").read_text())["threshold"]
        for k in (0, 1)
    ]
    margin = np.mean([lg - np.log(tk / (1 - tk)) for lg, tk in zip(logits, t)])
    assert (ensemble.predicted_label == "pos") == (margin >= 0)
    assert np.log(ensemble.attrs["threshold"] / (1 - ensemble.attrs["threshold"])) == (
        pytest.approx(np.mean([np.log(tk / (1 - tk)) for tk in t]))
    )
    np.testing.assert_allclose(
        ensemble.tile_probs, np.mean([f.tile_probs for f in folds], 0), atol=1e-6
    )
    assert ensemble.attrs["folds"] == [0, 1] and ensemble.attrs["in_sample"]
    assert ensemble.attrs["checkpoint_sha256"] not in {f.attrs["checkpoint_sha256"] for f in folds}


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
    result = predict_slides(
        root / "run", mixed, out=out, params=PredictParams(device=device), labels_csv=labels_csv
    )
    assert len(result.done) == 3 and [s for s, _ in result.failed] == ["wide_0000"]
    assert "12 features per tile" in (out / "failures.csv").read_text()
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "slide_id,label,predicted_label,in_sample,threshold,prob_neg,prob_pos"
    assert len(rows) == 4
    pred = read_prediction(out / "predictions" / f"{rows[1].split(',')[0]}.h5")
    assert pred.tile_probs.shape[1] == 2
    again = predict_slides(root / "run", mixed, out=out, params=PredictParams(device=device))
    assert len(again.skipped) == 3 and len(again.failed) == 1


def test_a_predictions_file_holds_exactly_what_the_docs_list(
    tmp_path, trained, device, file_contract
):
    """docs/formats.md's predictions table is what ``wsi-mil predict`` writes on top of the
    bag's attributes (a classification run of slide bags with one attention branch: no
    survival curve, patient or branches), and its *always* rows are what the reader needs."""
    root, features_dir, _ = trained
    bag = features_dir / "slide_0002.h5"
    path = predict_slide(
        bag, tmp_path / "slide_0002.h5", root / "run", PredictParams(device=device)
    )
    heading = "predictions/<slide_id>.h5"
    file_contract.check(
        path,
        heading,
        inherited={key for key in file_contract.entries(bag) if key[0] == "attribute"}
        - {("attribute", "complete")},
        not_written={
            ("attribute", "survival_times"),
            ("attribute", "survival"),
            ("attribute", "patient_id"),
            ("attribute", "bag_slides"),
            ("dataset", "branch_attention"),
            ("attribute", "branch_names"),
        },
    )
    always = {key for key, when in file_contract.documented(heading).items() if when == "always"}
    assert always == (
        {("dataset", name) for name in REQUIRED_DATASETS}
        | {("attribute", name) for name in REQUIRED_ATTRS}
        | {("attribute", "wsi_mil_version"), ("attribute", "created")}
    )


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
    predict_slides(
        root / "run",
        features_dir,
        out=tmp_path / "in",
        params=PredictParams(device=device, oof=False),
    )
    with pytest.warns(UserWarning, match="in-sample and optimistic"):
        metrics = evaluate_predictions(tmp_path / "in" / "predictions", labels_csv, n_boot=0)
    assert len(metrics["in_sample_slides"]) == 16
    predict_slides(
        root / "run", features_dir, out=tmp_path / "oof", params=PredictParams(device=device)
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert (
            evaluate_predictions(tmp_path / "oof" / "predictions", labels_csv, n_boot=0)[
                "in_sample_slides"
            ]
            == []
        )


def test_out_of_fold_slides_are_decided_at_their_own_folds_threshold(tmp_path, trained, device):
    import csv

    from wsi_mil.pipeline.predict import predict_slides

    root, features_dir, _ = trained
    predict_slides(
        root / "run", features_dir, out=tmp_path / "oof", params=PredictParams(device=device)
    )
    with (root / "run" / "splits.csv").open() as f:
        held_out = {r["slide_id"]: int(r["fold"]) for r in csv.DictReader(f) if r["role"] == "test"}
    fold_threshold = {
        k: json.loads((root / "run" / f"fold_{k}" / "model.json").read_text())["threshold"]
        for k in (0, 1)
    }
    with (tmp_path / "oof" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16
    for row in rows:
        threshold = fold_threshold[held_out[row["slide_id"]]]
        assert float(row["threshold"]) == pytest.approx(threshold, abs=1e-6)
        positive = float(row["prob_pos"]) >= threshold
        assert row["predicted_label"] == ("pos" if positive else "neg")


def test_patient_level_evaluation_and_compare(tmp_path, trained, device):
    import csv

    from wsi_mil.pipeline.evaluate import compare_predictions, evaluate_predictions
    from wsi_mil.pipeline.predict import predict_slides

    root, features_dir, planted_csv = trained
    # patients of two slides of one class (the planted cohort pairs a neg and a pos slide)
    with planted_csv.open() as f:
        rows = list(csv.DictReader(f))
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text(
        "slide_id,label,patient_id\n"
        + "".join(
            f"{r['slide_id']},{r['label']},{r['label']}{i // 4}\n" for i, r in enumerate(rows)
        )
    )
    predict_slides(
        root / "run", features_dir, out=tmp_path / "oof", params=PredictParams(device=device)
    )
    slide = evaluate_predictions(tmp_path / "oof" / "predictions", labels_csv, n_boot=0)
    assert slide["level"] == "slide" and slide["n_slides"] == 16
    assert 0 <= slide["brier"] <= 1 and 0 <= slide["ece"] <= 1
    assert (tmp_path / "oof" / "evaluation" / "calibration.png").is_file()
    patients = {}
    with labels_csv.open() as f:
        for r in csv.DictReader(f):
            patients.setdefault(r["patient_id"], []).append(r)
    with (tmp_path / "oof" / "predictions.csv").open() as f:
        prob = {r["slide_id"]: float(r["prob_pos"]) for r in csv.DictReader(f)}
    for aggregate, combine in (("mean", np.mean), ("max", np.max)):
        metrics = evaluate_predictions(
            tmp_path / "oof" / "predictions",
            labels_csv,
            n_boot=0,
            level="patient",
            patient_aggregate=aggregate,
        )
        assert metrics["n_patients"] == len(patients) == 8 and metrics["n_slides_scored"] == 16
        assert metrics["unit"] == "patients" and metrics["patient_aggregate"] == aggregate
        y = [int(any(r["label"] == "pos" for r in rows)) for rows in patients.values()]
        p = [combine([prob[r["slide_id"]] for r in rows]) for rows in patients.values()]
        from sklearn.metrics import roc_auc_score

        assert metrics["auc"] == pytest.approx(roc_auc_score(y, p))
    assert (tmp_path / "oof" / "evaluation" / "metrics_patient.json").is_file()
    assert metrics["mixed_label_patients"] == 0
    # "patients" that are batches holding both classes (UCSB's TMA batches): a warning
    batch_csv = tmp_path / "batches.csv"
    batch_csv.write_text(
        "slide_id,label,patient_id\n"
        + "".join(f"{r['slide_id']},{r['label']},b{i % 3}\n" for i, r in enumerate(rows))
    )
    mixed = sum(len({r["label"] for j, r in enumerate(rows) if j % 3 == b}) > 1 for b in range(3))
    assert mixed > 0
    with pytest.warns(UserWarning, match=f"{mixed} of 3 patients have slides of both classes"):
        batches = evaluate_predictions(
            tmp_path / "oof" / "predictions", batch_csv, n_boot=0, level="patient"
        )
    assert batches["mixed_label_patients"] == mixed
    result = compare_predictions(tmp_path / "oof", tmp_path / "oof", labels_csv, tmp_path / "cmp")
    assert result["difference"] == 0 and result["n_slides"] == 16
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["p_value"] == 1.0
