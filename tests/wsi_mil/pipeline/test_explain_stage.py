"""The explain stage end to end on planted bags: explanations.h5, figure, cohort table and trust
report, skip; out of fold by default; pooling baselines explain without failures."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import torch
from shapely.geometry import box
from shapely.ops import unary_union

from tiling.annotations import write_asap_xml
from wsi_mil.explain.params import ExplainParams
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.train import train_folds
from wsi_mil.pipeline.explain import explain_slides, read_explanations
from wsi_mil.project import Project
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, device):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("planted")
    bags = planted_bags(16, 49, 16, planted_fraction=0.15, shift=4.0, seed=0)
    features, labels = write_planted_bags(root, bags)
    annotations = root / "annotations"
    for bag in bags:
        if bag.label:  # the planted tiles' boxes on the 7 x 7 grid of 224 px tiles
            idx = np.flatnonzero(bag.planted)
            write_asap_xml(
                annotations / f"{bag.slide_id}.xml",
                unary_union(
                    [
                        box(i % 7 * 224, i // 7 * 224, i % 7 * 224 + 224, i // 7 * 224 + 224)
                        for i in idx
                    ]
                ),
            )
    params = TrainParams(
        model="gated_abmil",
        hidden_dims=(32,),
        attention_dim=16,
        epochs=15,
        monitor="none",
        lr=2e-3,
        folds=2,
        k_sample=3,
        device=device,
        bootstrap=0,
    )
    train_folds(features, labels, root / "run", params)
    yield root, features, annotations
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_explain_stage_outputs(planted_run, device, file_contract):
    root, features, annotations = planted_run
    out = root / "explain"
    params = ExplainParams(
        flip_steps=4, flip_random=1, bootstrap=50, ig_steps=8, device=device, figure_side=128
    )
    result = explain_slides(
        root / "run",
        features,
        out=Project(out, explanations=out),
        params=params,
        annotations_dir=annotations,
    )
    assert result.exit_code == 0 and len(result.done) == 16
    stored = read_explanations(out / "slide_0001" / "explanations.h5")
    maps, attrs = stored.maps, stored.attrs
    assert set(maps) == {
        "attention",
        "lrp",
        "gradient_x_input",
        "integrated_gradients",
        "attention_x_gradient",
        "perturbation",
        "keep_one",
        "segmentation",
        "random",
    }
    assert all(v.shape == (49,) for v in maps.values())
    assert attrs["model"] == "gated_abmil" and "tile_auc" in attrs["scores"]["attention"]
    assert not attrs["in_sample"] and "out of fold" in attrs["fold_choice"]
    for method in maps:  # faithfulness and the cascade on every method
        assert {
            "morf_aupc",
            "lerf_aupc",
            "random_aupc",
            "srg",
            "sanity_spearman",
            "mprt_mean",
        } <= set(attrs["scores"][method])
        assert len(attrs["patch_flipping"][method]["morf"]) == 5
        assert len(attrs["mprt"][method]) == len(attrs["mprt"]["stages"]) == 3
    with h5py.File(out / "slide_0001" / "explanations.h5") as f:
        assert f["attention"].attrs["method"] == "attention"
        assert f["lesion_fraction"][:].sum() == pytest.approx(7.0)
        lrp = f["lrp"]
        assert lrp[:].sum() + lrp.attrs["bias_share"] == pytest.approx(lrp.attrs["logit"], abs=1e-4)
    # docs/formats.md lists exactly what the stage writes (an annotated slide, lrp among the
    # methods: every entry)
    file_contract.check(
        out / "slide_0001" / "explanations.h5", "explain/<slide_id>/explanations.h5"
    )
    negative = read_explanations(out / "slide_0000" / "explanations.h5").scores
    assert "tile_auc" not in negative["attention"]  # no lesion: no localisation
    assert "srg" in negative["attention"]  # faithfulness needs no annotation
    assert (out / "slide_0001" / "comparison.png").stat().st_size > 0
    with (out / "cohort_table.csv").open() as f:
        rows = list(csv.DictReader(f))
    auc = {r["method"]: float(r["mean"]) for r in rows if r["metric"] == "tile_auc"}
    assert auc["attention"] > auc["random"] and int(rows[0]["n"]) >= 1
    table = (out / "cohort_table.md").read_text()
    assert "| attention |" in table and "Recommended method: **" in table
    assert "16 slides, 16 out of sample" in table
    trust = json.loads((out / "trust.json").read_text())
    assert trust["recommended"] not in (None, "random")
    assert [e["rank"] for e in trust["ranking"]] == list(range(1, len(trust["ranking"]) + 1))
    assert trust["ranking"][-1]["method"] == "random"
    assert (out / "cohort_scores.png").is_file()
    # a second run skips complete slides
    again = explain_slides(
        root / "run",
        features,
        out=Project(out, explanations=out),
        params=params,
        annotations_dir=annotations,
    )
    assert len(again.skipped) == 16


@pytest.mark.slow
def test_gradcam_runs_the_encoder_where_the_mil_model_runs(tmp_path, device, lesion, lesion_slide):
    """The stage's Grad-CAM loads the bag's encoder on the MIL model's device: the two run as
    one graph (a random-weights timm CNN stands in for the encoder)."""
    import timm

    from wsi_mil.mil.models import create_model
    from wsi_mil.pipeline.explain import _gradcam

    torch.manual_seed(0)
    cnn = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=0)
    weights = tmp_path / "random_mobilenet.pth"
    torch.save(cnn.state_dict(), weights)
    prediction = lesion.make_prediction(lesion_slide)
    attrs = {**prediction.attrs, "encoder": "timm:mobilenetv3_small_050", "weights": str(weights)}
    dim = cnn.head_hidden_size  # the pooled features after MobileNetV3's 1x1 head
    features = (
        np.random.default_rng(0).standard_normal((len(prediction.coords), dim)).astype(np.float32)
    )
    model = create_model("gated_abmil", dim, 2).to(device)
    note = _gradcam(
        tmp_path / "out",
        tmp_path / "lesion.h5",
        lesion_slide,
        attrs,
        prediction.coords,
        model,
        features,
        prediction.attention,
        1,
        2,
    )
    assert note == "2 tiles, timm:mobilenetv3_small_050", note
    assert (tmp_path / "out" / "gradcam.png").stat().st_size > 0


@pytest.fixture(scope="module")
def three_fold_run(tmp_path_factory):
    """A 3-fold cross-validated run of one epoch on 9 planted bags (the folds need not learn)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("oof")
    bags = planted_bags(9, 16, 8, planted_fraction=0.25, shift=4.0, seed=1)
    features, labels = write_planted_bags(root, bags)
    params = TrainParams(
        model="gated_abmil",
        hidden_dims=(8,),
        attention_dim=4,
        epochs=1,
        min_epochs=1,
        monitor="none",
        folds=3,
        k_sample=2,
        device="cpu",
        bootstrap=0,
    )
    train_folds(features, labels, root / "run", params)
    yield root, features
    torch.set_num_threads(threads)


FAST = {
    "methods": ("attention", "lrp", "random"),
    "flip_steps": 2,
    "flip_random": 1,
    "sanity": False,
    "figure": False,
    "gradcam_topk": 0,
    "bootstrap": 10,
    "device": "cpu",
}


def test_every_slide_is_explained_by_the_fold_that_held_it_out(three_fold_run):
    root, features = three_fold_run
    with (root / "run" / "splits.csv").open() as f:
        held_out_by = {
            r["slide_id"]: int(r["fold"]) for r in csv.DictReader(f) if r["role"] == "test"
        }
    assert sorted(set(held_out_by.values())) == [0, 1, 2] and len(held_out_by) == 9
    out = root / "oof"
    assert (
        explain_slides(
            root / "run", features, out=Project(out, explanations=out), params=ExplainParams(**FAST)
        ).exit_code
        == 0
    )
    for slide, fold in held_out_by.items():
        attrs = read_explanations(out / slide / "explanations.h5").attrs
        assert attrs["fold"] == fold and not attrs["in_sample"], slide
    assert "9 slides, 9 out of sample" in (out / "cohort_table.md").read_text()


def test_one_fold_for_all_leaves_its_training_slides_out_of_the_table(three_fold_run):
    root, features = three_fold_run
    with (root / "run" / "splits.csv").open() as f:
        roles = {r["slide_id"]: r["role"] for r in csv.DictReader(f) if r["fold"] == "0"}
    out = root / "fold0"
    explain_slides(
        root / "run",
        features,
        out=Project(out, explanations=out),
        params=ExplainParams(fold=0, **FAST),
    )
    in_sample = sorted(s for s, role in roles.items() if role in ("train", "val"))
    for slide, role in roles.items():
        attrs = read_explanations(out / slide / "explanations.h5").attrs
        assert attrs["fold"] == 0 and bool(attrs["in_sample"]) == (role != "test")
    table = (out / "cohort_table.md").read_text()
    assert f"9 slides, {9 - len(in_sample)} out of sample" in table
    assert f"{len(in_sample)} in sample" in table
    rows = list(csv.DictReader((out / "cohort_table.csv").open()))
    assert {int(r["n"]) for r in rows if r["metric"] == "srg"} == {9 - len(in_sample)}
    trust = json.loads((out / "trust.json").read_text())
    assert sorted(trust["in_sample_left_out"]) == in_sample


@pytest.mark.parametrize("model", ["mean_pool", "max_pool"])
def test_pooling_baselines_explain_without_failures(tmp_path, model):
    """Every method offered for them runs (attention x gradient used to fail every slide)."""
    torch.set_num_threads(1)
    bags = planted_bags(9, 12, 8, planted_fraction=0.25, shift=4.0, seed=2)
    features, labels = write_planted_bags(tmp_path, bags)
    train_folds(
        features,
        labels,
        tmp_path / "run",
        TrainParams(
            model=model,
            hidden_dims=(8,),
            epochs=1,
            min_epochs=1,
            monitor="none",
            folds=3,
            device="cpu",
            bootstrap=0,
        ),
    )
    params = ExplainParams(
        flip_steps=2,
        flip_random=1,
        ig_steps=2,
        figure=False,
        gradcam_topk=0,
        bootstrap=10,
        device="cpu",
    )
    result = explain_slides(tmp_path / "run", features, out=tmp_path, params=params)
    assert result.failed == [] and len(result.done) == 9
    stored = read_explanations(tmp_path / "explain" / "slide_0000" / "explanations.h5")
    maps = stored.maps
    assert "attention_x_gradient" not in maps and {"lrp", "perturbation"} <= set(maps)


def test_explain_stage_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="features folder"):
        explain_slides(tmp_path / "run", tmp_path / "nowhere", out=tmp_path / "out")
    with pytest.raises(ValueError, match="'saliency' is not allowed, each item must be one of"):
        ExplainParams(methods=("saliency",))
    with pytest.raises(ValueError, match="relevance is now chefer_iccv2021"):
        ExplainParams(methods=("relevance",))
    assert json.dumps(list(ExplainParams().methods)) == "[]"


def test_heatmap_scores_include_stored_explanations():
    from wsi_mil.heatmaps.stitch import score_names, tile_scores
    from wsi_mil.mil.predictions import SlidePrediction

    prediction = SlidePrediction(
        "s",
        np.zeros((3, 2), np.int64),
        np.zeros(3, np.float32),
        np.zeros(3, np.float32),
        np.full((3, 2), 0.5, np.float32),
        np.array([0.5, 0.5], np.float32),
        ["normal", "tumor"],
        "tumor",
    )
    prediction.extra_scores["lrp"] = np.array([0.1, 0.7, 0.2])
    assert score_names(prediction)[-1] == "lrp"
    np.testing.assert_allclose(tile_scores(prediction, "lrp"), [0.1, 0.7, 0.2])
    with pytest.raises(ValueError, match="unknown score"):
        tile_scores(prediction, "saliency")
