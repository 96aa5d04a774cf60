"""Each task trained on generated bags whose answer is known (wsi_mil.synthetic.bags): the
out-of-fold figures the issue asks for, and attention on the planted lesions, read back from
the files ``predict`` writes; subtypes without a negative class; patient-level bags (on the
test device, ``WSI_MIL_TEST_DEVICE``)."""

from __future__ import annotations

import csv
import json
import re

import h5py
import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from wsi_mil.mil.params import PredictParams, TrainParams
from wsi_mil.mil.predictions import read_prediction
from wsi_mil.mil.train import train_folds
from wsi_mil.pipeline.evaluate import evaluate_predictions
from wsi_mil.pipeline.predict import predict_slides
from wsi_mil.synthetic.bags import PlantedBag, iter_task_bags, write_planted_bags


@pytest.fixture
def fast(device) -> dict:
    """Small, quick training settings on the test device (``WSI_MIL_TEST_DEVICE``)."""
    return {
        "hidden_dims": (32,),
        "attention_dim": 16,
        "lr": 5e-3,
        "device": device,
        "bootstrap": 0,
        "epochs": 30,
        "min_epochs": 10,
        "folds": 3,
        "use_tile_labels": False,
    }


def run_task(root, fast, task, n=60, tiles=16, dim=8, **params):
    """Generated bags of ``task`` trained, then predicted out of fold: (bags, summary, the
    prediction files' folder)."""
    bags = list(iter_task_bags(task, n, (tiles, 2 * tiles), dim, seed=0))
    features, labels = write_planted_bags(root, bags, task=task, with_tile_labels=True)
    summary = train_folds(
        features, labels, root / "run", TrainParams(task=task, **{**fast, **params})
    )
    predict_slides(
        root / "run",
        features,
        out=root,
        params=PredictParams(device=fast["device"]),
        labels_csv=labels,
    )
    return bags, summary, labels


def attention_tile_auc(
    root,
    bags: list[PlantedBag],
    dataset: str = "attention",
    column: int | None = None,
    kind: int = 1,
) -> float:
    """AUC of the predicted attention for the tiles planted with lesion ``kind``, over the
    bags that have some (and some tiles without)."""
    scores, truth = [], []
    for bag in bags:
        if not (bag.kinds == kind).any() or (bag.kinds == kind).all():
            continue
        with h5py.File(root / "predictions" / f"{bag.slide_id}.h5", "r") as f:
            values = f[dataset][:]
        scores.append(values if column is None else values[:, column])
        truth.append(bag.kinds == kind)
    return float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))


def explanation_tile_auc(
    root, bags: list[PlantedBag], device: str, method: str = "integrated_gradients"
) -> float:
    """AUC of the explain stage's ``method`` maps (each bag explained out of fold, by the fold
    model that held it out) for the planted tiles, over the bags that have some."""
    from wsi_mil.explain.params import ExplainParams
    from wsi_mil.explain.store import EXPLANATIONS, read_explanations
    from wsi_mil.pipeline.explain import explain_slide

    params = ExplainParams(
        methods=(method,), sanity=False, figure=False, gradcam_topk=0, flip_steps=0, device=device
    )
    scores, truth = [], []
    for bag in bags:
        if not bag.planted.any() or bag.planted.all():
            continue
        out = root / "explain" / bag.slide_id
        explain_slide(
            root / "features" / "planted" / f"{bag.slide_id}.h5", out, root / "run", params
        )
        stored = read_explanations(out / EXPLANATIONS)
        maps, attrs = stored.maps, stored.attrs
        assert not attrs["in_sample"]
        scores.append(maps[method])
        truth.append(bag.planted)
    return float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))


@pytest.mark.slow
def test_survival_out_of_fold_c_index_and_attention_on_the_lesions(tmp_path, fast):
    bags, summary, labels = run_task(tmp_path, fast, "survival", cox_batch_size=8)
    pooled = summary["pooled_out_of_fold"]
    assert pooled["harrell_c"] >= 0.75, pooled["harrell_c"]
    assert pooled["logrank"]["p_value"] < 0.05
    assert attention_tile_auc(tmp_path, bags) >= 0.8
    assert explanation_tile_auc(tmp_path, bags, fast["device"]) >= 0.8  # the risk's
    metrics = evaluate_predictions(
        tmp_path / "predictions", labels, n_boot=0
    )  # the files predict wrote
    assert metrics["harrell_c"] == pytest.approx(pooled["harrell_c"])
    assert (tmp_path / "evaluation" / "km_risk_groups.png").is_file()
    meta = json.loads((tmp_path / "run" / "fold_0" / "model.json").read_text())
    assert meta["task"] == "survival" and meta["threshold_rule"].startswith("median risk")
    assert "segmentation_head" in meta["kwargs"] and len(meta["baseline_times"]) > 1
    prediction = read_prediction(next((tmp_path / "predictions").glob("*.h5")))
    curve = np.asarray(prediction.attrs["survival"])
    assert len(curve) == len(prediction.attrs["survival_times"])
    assert np.all(np.diff(curve) <= 1e-9) and 0 <= curve.min()  # a survival curve falls


@pytest.mark.slow
def test_discrete_time_survival_trains_on_its_intervals(tmp_path, fast):
    # four hazards per bag overfit a few dozen training bags more than one Cox risk: more bags
    bags, summary, _ = run_task(tmp_path, fast, "survival", n=120, survival_loss="nll")
    assert summary["pooled_out_of_fold"]["harrell_c"] >= 0.7
    meta = json.loads((tmp_path / "run" / "fold_0" / "model.json").read_text())
    assert meta["n_classes"] == 4 and len(meta["bin_edges"]) == 5
    assert attention_tile_auc(tmp_path, bags) >= 0.8
    # explained through its risk (wsi_mil.mil.tasks.risk_view)
    assert explanation_tile_auc(tmp_path, bags, fast["device"]) >= 0.8


@pytest.mark.slow
def test_regression_out_of_fold_r2_and_attention_on_the_lesions(tmp_path, fast):
    bags, summary, labels = run_task(
        tmp_path, fast, "regression", tiles=24, epochs=40, regression_loss="huber"
    )
    pooled = summary["pooled_out_of_fold"]
    assert pooled["r2"] >= 0.5, pooled["r2"]
    low, high = evaluate_predictions(tmp_path / "predictions", labels, n_boot=100)["r2_ci95"]
    assert low <= pooled["r2"] <= high
    assert attention_tile_auc(tmp_path, bags) >= 0.8
    assert explanation_tile_auc(tmp_path, bags, fast["device"]) >= 0.8  # the value's
    with (tmp_path / "predictions.csv").open() as f:
        row = next(csv.DictReader(f))
    assert set(row) >= {"slide_id", "label", "predicted_label", "value"}


@pytest.mark.slow
def test_multilabel_recovers_both_lesion_types_each_in_its_own_branch(tmp_path, fast):
    bags, summary, labels = run_task(tmp_path, fast, "multilabel")
    per_target = summary["pooled_out_of_fold"]["per_target"]
    assert per_target["lesion_a"]["auc"] >= 0.9 and per_target["lesion_b"]["auc"] >= 0.9
    # each target's attention branch finds its own lesion type, not the other one
    own = [attention_tile_auc(tmp_path, bags, "branch_attention", t, kind=t + 1) for t in range(2)]
    other = [
        attention_tile_auc(tmp_path, bags, "branch_attention", t, kind=2 - t) for t in range(2)
    ]
    assert min(own) >= 0.8, own
    assert max(other) < 0.7, other
    metrics = evaluate_predictions(tmp_path / "predictions", labels, n_boot=0)
    assert metrics["macro_auc"] == pytest.approx(summary["pooled_out_of_fold"]["macro_auc"])
    assert 0 <= metrics["hamming_loss"] <= 1 and "subset_accuracy" in metrics


def test_subtypes_train_without_a_negative_class_and_the_head_is_per_class(tmp_path, fast):
    bags = list(iter_task_bags("subtypes", 36, 12, 8, seed=0))  # luad and lusc lesions
    features, labels = write_planted_bags(tmp_path, bags, task="subtypes")
    params = TrainParams(**{**fast, "epochs": 12, "min_epochs": 6})
    summary = train_folds(features, labels, tmp_path / "run", params)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["negative_class"] is None and config["segmentation_head"] == "one_vs_rest"
    assert summary["subtyping"] and summary["negative_class"] is None
    predict_slides(
        tmp_path / "run",
        features,
        out=tmp_path,
        params=PredictParams(device=fast["device"]),
        labels_csv=labels,
    )
    # the head is per class: P(luad) ranks luad's own tiles, P(lusc) lusc's
    luad = attention_tile_auc(tmp_path, bags, "tile_probs", 0, kind=1)
    lusc = attention_tile_auc(tmp_path, bags, "tile_probs", 1, kind=2)
    assert luad >= 0.8 and lusc >= 0.8, (luad, lusc)
    metrics = evaluate_predictions(tmp_path / "predictions", labels, n_boot=0)
    assert metrics["subtyping"] and metrics["auc"] >= 0.9


def test_patient_level_bags_pool_a_patients_slides_and_predict_each_slide(tmp_path, fast, capsys):
    bags = list(iter_task_bags("regression", 24, (8, 12), 6, seed=1, slides_per_patient=2))
    features, labels = write_planted_bags(tmp_path, bags, task="regression")
    params = TrainParams(
        task="regression", bag_level="patient", **{**fast, "epochs": 3, "min_epochs": 1}
    )
    summary = train_folds(features, labels, tmp_path / "run", params)
    assert summary["bag_level"] == "patient"
    assert summary["pooled_out_of_fold"]["n_slides"] == 12  # one bag per patient
    splits = list(csv.DictReader((tmp_path / "run" / "splits.csv").open()))
    assert {r["slide_id"] for r in splits} == {b.slide_id for b in bags}  # slides keep ids
    predict_slides(
        tmp_path / "run",
        features,
        out=tmp_path,
        params=PredictParams(device=fast["device"]),
        labels_csv=labels,
    )
    # the progress bar counts patients, one job each (ticks 12 of 12 patients)
    assert re.search(r"predict: 100%.*12/12 .*patient", capsys.readouterr().err)
    with (
        h5py.File(tmp_path / "predictions" / "slide_0000.h5", "r") as a,
        h5py.File(tmp_path / "predictions" / "slide_0001.h5", "r") as b,
    ):
        assert a.attrs["patient_id"] == b.attrs["patient_id"] == "patient_0000"
        assert a["coords"].shape[0] == bags[0].features.shape[0]  # its own tiles only
        assert float(a.attrs["probs"][0]) == float(b.attrs["probs"][0])  # the patient's value
        assert b["coords"].shape[0] == bags[1].features.shape[0]
    with pytest.warns(UserWarning, match="scored per patient"):
        metrics = evaluate_predictions(tmp_path / "predictions", labels, n_boot=0)
    assert metrics["unit"] == "patients" and metrics["n_patients"] == 12
