"""Reading the overlay pyramids: ``heatmap.zarr`` of either OME version, the segmenter's
``mask.zarr``, and a malformed one shown as one line naming the file and the attribute."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from tiling.lattice import SlideGeometry, TileGrid
from wsi_mil.errors import InputError
from wsi_mil.export.ome_zarr import write_heatmap_zarr
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.viewer.project import ProjectIndex
from wsi_mil.viewer.service import ViewerService, _segment_layers, _zarr_layers


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_heatmap_zarr_of_either_version_with_raw_attention(
    tmp_path: Path, planted, version: str
) -> None:
    pred = planted.prediction(tmp_path / "planted.tiff", "planted")
    path = write_heatmap_zarr(
        tmp_path / "heatmap.zarr",
        pred,
        HeatmapParams(normalize="raw", ome_zarr_version=version),
    )
    # the writer gives attention the window [0, 1] whatever the normalisation; a raw map's
    # reader takes whatever window the file holds (napari's contrast limits), here a wider one
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    omero = (attrs["ome"] if version == "0.5" else attrs)["omero"]
    omero["channels"][0]["window"].update(start=-1.5, end=3.25)
    assert omero["channels"][0]["label"] == "attention"
    group.attrs.put(attrs)
    layers = _zarr_layers(path, planted.mpp)

    assert set(layers) == {"attention", "prob_normal", "prob_tumor"}
    grid = TileGrid.from_coords(pred.coords, SlideGeometry.from_attrs(pred.attrs, "planted"))
    attention = layers["attention"]
    assert attention.label == "attention (raw)"
    assert (attention.vmin, attention.vmax) == (-1.5, 3.25)
    assert attention.stride == pytest.approx(grid.stride)
    assert attention.origin == pytest.approx(grid.origin)
    assert layers["prob_tumor"].label == "P(tumor) (tile probability)"
    assert (layers["prob_tumor"].vmin, layers["prob_tumor"].vmax) == (0.0, 1.0)
    np.testing.assert_array_equal(attention.levels[0], grid.stitch(pred.attention))


def _break(attrs: dict[str, Any], how: str) -> dict[str, Any]:
    broken = copy.deepcopy(attrs)
    ome = broken.get("ome", broken)
    level0 = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    if how == "no datasets":
        ome["multiscales"][0]["datasets"] = []
    elif how == "scale not a number":
        level0[0]["scale"][-1] = "wide"
    elif how == "no translation":
        del level0[1]
    elif how == "channel not a string":
        broken["wsi_mil"]["channels"][0] = 7
    return broken


@pytest.mark.parametrize(
    ("version", "how", "message"),
    [
        (
            "0.4",
            "no datasets",
            "attribute multiscales[0].datasets is missing or not a list of at least 1",
        ),
        (
            "0.5",
            "no datasets",
            "attribute ome.multiscales[0].datasets is missing or not a list of at least 1",
        ),
        (
            "0.4",
            "scale not a number",
            "attribute multiscales[0].datasets[0]."
            "coordinateTransformations[0].scale[-1] is missing or not a number",
        ),
        ("0.5", "no translation", "level 0 has no scale or no translation transformation"),
        ("0.4", "channel not a string", "attribute wsi_mil.channels[0] is missing or not a string"),
        ("0.4", "no level 1", "level '1' is missing or not an array"),
    ],
)
def test_malformed_heatmap_zarr_is_one_line_and_the_slide_still_shows(
    tmp_path: Path, planted_slide: Path, planted, version: str, how: str, message: str
) -> None:
    root = planted.make_project(tmp_path / "project", planted_slide, zarr=False)
    path = root / "heatmaps" / "planted" / "heatmap.zarr"
    path.parent.mkdir(parents=True)
    params = HeatmapParams(zarr_chunk=8, ome_zarr_version=version)
    write_heatmap_zarr(path, planted.prediction(planted_slide, "planted"), params)
    group = zarr.open_group(str(path), mode="r+")
    if how == "no level 1":
        del group["1"]
    else:
        group.attrs.put(_break(dict(group.attrs), how))

    service = ViewerService(ProjectIndex.build(root))
    detail = service.slide_detail("planted")
    assert detail["layer_error"] == f"overlays unavailable: {path}: {message}"
    assert detail["error"] is None and detail["width"] == planted.width
    assert f'Width="{planted.width}"' in service.slide_dzi("planted")
    assert service.slide_tile("planted", 8, 0, 0).startswith(b"\xff\xd8")  # a JPEG


def _mask_zarr(path: Path, attrs: dict[str, Any]) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for k, size in enumerate((8, 4)):
        group.create_array(str(k), shape=(1, size, size), dtype="uint8")
    group.attrs.put(attrs)


def test_segmenter_mask_layer_and_a_malformed_one(tmp_path: Path) -> None:
    datasets = [{"path": "0"}, {"path": "1"}]
    _mask_zarr(
        tmp_path / "good" / "mask.zarr",
        {"multiscales": [{"datasets": datasets}], "wsi_mil": {"downsample_level0": 4.0}},
    )
    layer = _segment_layers(tmp_path / "good")["segment_mask"]
    assert layer.stride == 4.0 and [a.shape for a in layer.arrays] == [(1, 8, 8), (1, 4, 4)]

    _mask_zarr(
        tmp_path / "bad" / "mask.zarr",
        {"multiscales": [{"datasets": datasets}], "wsi_mil": {"mask_mpp": 1.0}},
    )
    with pytest.raises(InputError) as raised:
        _segment_layers(tmp_path / "bad")
    assert str(raised.value) == (
        f"{tmp_path / 'bad' / 'mask.zarr'}: attribute wsi_mil.downsample_level0 is missing or "
        "not a number"
    )
