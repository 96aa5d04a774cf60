"""A segmenter trained for a few epochs on a generated cohort (through the command line, on the
test device ``WSI_MIL_TEST_DEVICE``), scored on its held-out slides against the planted lesions
and the tile head."""

from __future__ import annotations

import json

import pytest

from tiling.annotations import read_annotations
from tiling.params import TilingParams
from tiling.pipeline import tile_slide
from wsi_mil.cli import main
from wsi_mil.explain.lesions import evaluate_lesions
from wsi_mil.mil.predictions import read_prediction
from wsi_mil.pipeline.cohort import generate_cohort
from wsi_mil.segment.evaluate import SegmentedSlides, pixel_scores
from wsi_mil.synthetic.params import CohortParams
from wsi_mil.synthetic.predictions import annotation_prediction

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, device):
    """Train (CLI segment-train) on the train split, segment (CLI segment) the test split."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("segment")
    cohort = generate_cohort(
        root / "cohort",
        CohortParams(
            train_normal=1, train_tumor=4, test_normal=1, test_tumor=3, size_px=2048, seed=1
        ),
    )
    model = root / "model"
    assert (
        main(
            [
                "segment-train",
                "--slides",
                str(cohort.slides_dir),
                "--annotations",
                str(cohort.annotations_dir),
                "--labels",
                str(cohort.labels_csv),
                "--split",
                "train",
                "--model",
                str(model),
                "--net",
                "unet",
                "--mpp",
                "2.0",
                "--tile-size",
                "64",
                "--channels",
                "8",
                "16",
                "32",
                "--tiles-per-slide",
                "48",
                "--epochs",
                "12",
                "--lr",
                "0.003",
                "--device",
                device,
            ]
        )
        == 0
    )
    test = [s for s in cohort.slides if s.split == "test"]
    for slide in test:
        tiles = tile_slide(slide.path, root / "tiled", TilingParams(target_mpp=1.0, tile_size=128))
        annotation_prediction(
            tiles, slide.annotation, root / "predictions" / f"{slide.slide_id}.h5"
        )
    assert (
        main(
            [
                "segment",
                "--predictions",
                str(root / "predictions"),
                "--model",
                str(model),
                "--out",
                str(root),
                "--device",
                device,
            ]
        )
        == 0
    )
    return root, cohort, test


def test_model_card_records_the_training(segmented):
    root, cohort, _ = segmented
    card = json.loads((root / "model" / "model_card.json").read_text())
    assert card["net"] == "unet" and card["classes"] == ["background", "lesion"]
    assert set(card["train_slides"] + card["val_slides"]) <= {
        s.slide_id for s in cohort.slides if s.split == "train"
    }
    assert card["best_val_dice"] == max(h["val_dice"] for h in card["history"])
    assert len(card["checkpoint_sha256"]) == 64


def test_pixel_dice_reaches_085_and_beats_the_tile_head(segmented):
    root, _, test = segmented
    for slide in test:
        prediction = read_prediction(root / "predictions" / f"{slide.slide_id}.h5")
        lesions = read_annotations(slide.annotation).lesions if slide.annotation else None
        scores = pixel_scores(
            root / "segment" / slide.slide_id,
            prediction,
            1,
            lesions,
            0.5,
            0.5,
            eval_mpp=2.0,
            min_area_um2=200.0,
        )
        if slide.label == "tumor":
            assert scores.mask.dice >= 0.85, slide.slide_id
            assert scores.mask.dice > scores.tile_head.dice, slide.slide_id
        else:
            assert scores.mask.specificity > 0.99


def test_evaluation_reports_pixel_masks_beside_the_tile_head(segmented):
    root, cohort, test = segmented
    labels = {s.slide_id: s.label for s in test}
    summary = evaluate_lesions(
        root / "predictions",
        labels,
        cohort.annotations_dir,
        root / "evaluation",
        pixels=SegmentedSlides(root / "segment"),
    )
    pixel = summary["pixel_segmentation"]
    assert pixel["n_slides"] == len(test)
    assert pixel["mask"]["dice"] > pixel["tile_head"]["dice"]
    assert pixel["froc"] is not None and 0 <= pixel["froc"] <= 1
    header = (root / "evaluation" / "lesion_per_slide.csv").read_text().splitlines()[0]
    assert "pixel_dice" in header and "tile_pixel_dice" in header


def test_segment_outputs_are_complete_and_resumable(segmented, capsys, device):
    root, _, test = segmented
    for slide in test:
        folder = root / "segment" / slide.slide_id
        summary = json.loads((folder / "segment.json").read_text())
        assert summary["tiles_segmented"] <= summary["tiles"]
        geojson = json.loads((folder / "lesions.geojson").read_text())
        if slide.label == "tumor":
            assert geojson["features"]
            assert all(
                f["properties"]["measurements"]["area_um2"] >= 200 for f in geojson["features"]
            )
    assert (
        main(
            [
                "segment",
                "--predictions",
                str(root / "predictions"),
                "--model",
                str(root / "model"),
                "--out",
                str(root),
                "--device",
                device,
            ]
        )
        == 0
    )
    assert f"0 done, {len(test)} skipped" in capsys.readouterr().out


def test_missing_model_is_one_clear_error(segmented, capsys, tmp_path):
    root, _, _ = segmented
    assert (
        main(
            [
                "segment",
                "--predictions",
                str(root / "predictions"),
                "--model",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "model_card.json" in err and "Traceback" not in err
