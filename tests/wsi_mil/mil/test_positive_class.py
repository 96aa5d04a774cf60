"""One positive class, chosen safely: never by sort order, the same in every output."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tiling.annotations import write_asap_xml
from tiling.lattice import SlideGeometry, TileGrid
from wsi_mil.explain.lesions import evaluate_lesions
from wsi_mil.export.geojson import write_segmentation_geojson
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import positive_cells
from wsi_mil.mil.labels import LabelsError, choose_negative_class
from wsi_mil.mil.predictions import PredictionFileError, write_prediction


@pytest.mark.parametrize(
    "names, negative",
    [
        (("epithelial", "none"), "none"),
        (("benign", "malignant"), "benign"),
        (("tumor", "normal"), "normal"),
        (("0", "1"), "0"),
        (("Negative", "Positive"), "Negative"),
    ],
)
def test_negative_class_is_recognised_by_name_not_by_sort_order(names, negative):
    assert choose_negative_class(names, None) == negative


def test_unrecognisable_negative_class_must_be_named():
    with pytest.raises(
        LabelsError,
        match=r"cannot tell which of the labels \['luminal', "
        r"'basal'\].*--negative-class",
    ):
        choose_negative_class(("luminal", "basal"), None, source="labels.csv")
    assert choose_negative_class(("luminal", "basal"), "basal") == "basal"
    with pytest.raises(LabelsError, match="'normal' is not one of"):
        choose_negative_class(("luminal", "basal"), "normal")


def flipped(lesion, slide_path):
    """The conftest prediction relabelled so the negative class sorts last: columns
    ``[epithelial (the lesion map), none]``, with the run's negative class recorded."""
    pred = lesion.make_prediction(slide_path)
    return dataclasses.replace(
        pred,
        class_names=["epithelial", "none"],
        tile_probs=pred.tile_probs[:, ::-1].copy(),
        predicted_label="epithelial",
        probs=pred.probs[::-1].copy(),
        attrs={**pred.attrs, "negative_class": "none"},
    )


def test_heatmap_geojson_and_froc_outline_the_same_class(tmp_path, lesion, lesion_slide):
    pred = flipped(lesion, lesion_slide)
    assert pred.positive_index() == 0
    grid = TileGrid.from_coords(pred.coords, SlideGeometry.from_attrs(pred.attrs))
    cells = positive_cells(pred, grid, HeatmapParams())
    lesion_map = grid.stitch(pred.tile_probs[:, 0]) >= 0.5
    assert cells.any() and np.array_equal(cells, lesion_map)
    path = write_segmentation_geojson(
        tmp_path / "segmentation.geojson", pred, grid, cells, HeatmapParams()
    )
    classes = {
        f["properties"]["classification"]["name"] for f in json.loads(path.read_text())["features"]
    }
    assert classes == {"epithelial"}
    # the FROC and tile Dice score the same column: perfect on the planted lesion
    write_prediction(tmp_path / "pred" / "lesion.h5", pred)
    write_asap_xml(tmp_path / "ann" / "lesion.xml", lesion.lesion)
    summary = evaluate_lesions(
        tmp_path / "pred", {"lesion": "epithelial"}, tmp_path / "ann", tmp_path / "eval"
    )
    assert summary["segmentation"]["dice"] > 0.8
    assert summary["froc"] > 0.9
    assert summary["counts"]["dice"] == {
        "n": 1,
        "n_excluded": 0,
        "excluded_because": "neither predicted nor true tumour tiles",
    }


def test_cohort_means_say_how_many_slides_they_left_out(tmp_path, lesion, lesion_slide):
    pred = flipped(lesion, lesion_slide)
    write_prediction(tmp_path / "pred" / "lesion.h5", pred)
    blank = dataclasses.replace(
        pred,
        slide_id="blank",
        tile_probs=np.tile([[0.0, 1.0]], (len(pred.coords), 1)).astype(np.float32),
    )
    write_prediction(tmp_path / "pred" / "blank.h5", blank)
    write_asap_xml(tmp_path / "ann" / "lesion.xml", lesion.lesion)
    write_asap_xml(tmp_path / "ann" / "blank.xml", lesion.lesion)
    summary = evaluate_lesions(
        tmp_path / "pred",
        {"lesion": "epithelial", "blank": "epithelial"},
        tmp_path / "ann",
        tmp_path / "eval",
    )
    hausdorff = summary["counts"]["hausdorff_um"]
    assert hausdorff["n"] == 1 and hausdorff["n_excluded"] == 1  # blank predicts no tumour
    assert "undefined" in hausdorff["excluded_because"]


def test_a_named_positive_class_must_exist(lesion, lesion_slide):
    with pytest.raises(PredictionFileError, match="'tumor' is not one of"):
        flipped(lesion, lesion_slide).positive_index("tumor")
