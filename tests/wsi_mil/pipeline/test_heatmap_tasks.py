"""Heatmaps of every task: one overlay per class or target (its own attention branch, or its
one-vs-rest tile probability), the tile risk or value for survival and regression, and no
segmentation pictures where the run has no segmentation head."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.render import slide_title
from wsi_mil.mil.predictions import read_prediction, write_prediction
from wsi_mil.pipeline.heatmap import expected_files, heatmap_slide, is_complete


def task_prediction(lesion, slide, task: str, **changes):
    """The conftest's lesion prediction (tile probabilities and attention follow the lesion)
    recast as another task's."""
    base = lesion.make_prediction(slide)
    return dataclasses.replace(
        base, attrs={**base.attrs, "task": task, **changes.pop("attrs", {})}, **changes
    )


PARAMS = HeatmapParams(max_side=384, topk=0, formats=("png", "geojson"))


def test_subtypes_get_one_overlay_per_class_and_a_segmentation_of_the_predicted_class(
    tmp_path, lesion, lesion_slide
):
    prediction = task_prediction(
        lesion,
        lesion_slide,
        "classification",
        attrs={"negative_class": None, "segmentation": "one_vs_rest"},
    )
    path = write_prediction(tmp_path / "lesion.h5", prediction)
    folder = heatmap_slide(path, tmp_path / "out" / "lesion", PARAMS)
    names = sorted(p.name for p in folder.iterdir())
    assert {"overlay_normal.png", "overlay_tumor.png", "segmentation.png"} <= set(names)
    summary = json.loads((folder / "heatmap.json").read_text())
    assert summary["per_output"] == {"overlay_normal.png": "normal", "overlay_tumor.png": "tumor"}
    assert read_prediction(path).positive_index() == 1  # the predicted class, not "normal"
    assert is_complete(folder, PARAMS)


def test_branch_attention_is_shown_per_target(tmp_path, lesion, lesion_slide):
    base = lesion.make_prediction(lesion_slide)
    branches = np.stack([base.attention_norm, 1 - base.attention_norm], axis=1)
    prediction = task_prediction(
        lesion,
        lesion_slide,
        "multilabel",
        class_names=["a", "b"],
        predicted_label="a",
        probs=np.array([0.9, 0.2], np.float32),
        branch_attention=branches.astype(np.float32),
        attrs={"segmentation": "one_vs_rest", "threshold": [0.5, 0.5]},
    )
    path = write_prediction(tmp_path / "lesion.h5", prediction)
    assert np.allclose(read_prediction(path).branch_attention, branches)
    folder = heatmap_slide(path, tmp_path / "out" / "lesion", PARAMS)
    summary = json.loads((folder / "heatmap.json").read_text())
    assert summary["per_output"] == {"overlay_a.png": "attention:a", "overlay_b.png": "attention:b"}
    assert "a 0.900, b 0.200" in slide_title(read_prediction(path))


@pytest.mark.parametrize("task, name", [("survival", "risk"), ("regression", "ki67")])
def test_survival_and_regression_show_tile_values_and_no_segmentation(
    tmp_path, lesion, lesion_slide, task, name
):
    base = lesion.make_prediction(lesion_slide)
    prediction = task_prediction(
        lesion,
        lesion_slide,
        task,
        class_names=[name],
        predicted_label="high risk" if task == "survival" else "12.5",
        probs=np.array([0.8], np.float32),
        tile_probs=base.tile_probs[:, 1:] * 3.0,
        attrs={"threshold": 0.1},
    )
    path = write_prediction(tmp_path / "lesion.h5", prediction)
    folder = heatmap_slide(path, tmp_path / "out" / "lesion", PARAMS)
    names = {p.name for p in folder.iterdir()}
    assert f"overlay_{name}.png" in names
    assert not {"segmentation.png", "segmentation.geojson"} & names
    assert set(expected_files(PARAMS, task)) <= names and is_complete(folder, PARAMS)
    geojson = json.loads((folder / "tiles.geojson").read_text())
    measurements = geojson["features"][0]["properties"]["measurements"]
    assert f"tile_{name}" in measurements and f"prob_{name}" not in measurements
    title = slide_title(read_prediction(path))
    assert ("risk 0.800, cut 0.100" in title) if task == "survival" else "ki67 0.8" in title
