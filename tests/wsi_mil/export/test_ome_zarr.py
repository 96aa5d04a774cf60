"""heatmap.zarr: OME-Zarr multiscales that zarr 3 reads, with shapes and µm/px per level."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from tiling.lattice import SlideGeometry, TileGrid
from wsi_mil.export.ome_zarr import write_heatmap_zarr
from wsi_mil.heatmaps.params import HeatmapParams


def ome_metadata(group: zarr.Group, version: str) -> dict:
    attrs = group.attrs.asdict()
    return attrs if version == "0.4" else attrs["ome"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_zarr_levels_shapes_and_scale_metadata(tmp_path, lesion, version):
    prediction = lesion.make_prediction("unused.tiff")
    grid = TileGrid.from_coords(prediction.coords, SlideGeometry.from_attrs(prediction.attrs))
    assert grid.shape == (48, 64)  # 3072 / 64 and 4096 / 64 cells of one stride
    path = write_heatmap_zarr(
        tmp_path / "heatmap.zarr",
        prediction,
        HeatmapParams(zarr_chunk=16, ome_zarr_version=version),
    )
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == (2 if version == "0.4" else 3)
    meta = ome_metadata(group, version)
    multiscales = meta["multiscales"][0]
    assert [a["name"] for a in multiscales["axes"]] == ["c", "y", "x"]
    assert multiscales["axes"][2]["unit"] == "micrometer"
    if version == "0.4":
        assert multiscales["version"] == "0.4"
    else:
        assert meta["version"] == "0.5" and group["0"].metadata.dimension_names == ("c", "y", "x")
    channels = ["attention", "attention_raw", "prob_normal", "prob_tumor"]
    assert [c["label"] for c in meta["omero"]["channels"]] == channels
    shapes = [(4, 48, 64), (4, 24, 32), (4, 12, 16)]
    assert [tuple(group[d["path"]].shape) for d in multiscales["datasets"]] == shapes
    for k, dataset in enumerate(multiscales["datasets"]):
        scale, translation = dataset["coordinateTransformations"]
        assert scale["type"] == "scale" and translation["type"] == "translation"
        cell_um = 64 * 0.5 * 2**k  # stride (level-0 px) x mpp, doubling per level
        assert scale["scale"] == [1.0, cell_um, cell_um]
        assert translation["translation"] == pytest.approx([0.0, cell_um / 2, cell_um / 2])
        assert group[dataset["path"]].chunks == (1, min(16, shapes[k][1]), min(16, shapes[k][2]))
    level0 = group["0"][:]
    tumour = level0[3]
    # lesion centre (2700, 1200) -> cell (18, 42); glass far outside the tissue has no tiles
    assert tumour[1200 // 64, 2700 // 64] == pytest.approx(1.0)
    assert np.isnan(tumour[0, 0]) and np.isnan(level0[0, 0, 0])
    # attention as percentiles (rank, ties averaged): the lesion tiles rank highest
    assert 0.0 < np.nanmin(level0[0]) and np.nanmax(level0[0]) <= 1.0
    assert level0[0, 1200 // 64, 2700 // 64] == np.nanmax(level0[0])
    assert json.loads(json.dumps(group.attrs.asdict()))["wsi_mil"]["slide_id"] == "lesion"


def test_zarr_is_written_atomically(tmp_path, lesion, monkeypatch):
    prediction = lesion.make_prediction("unused.tiff")
    from wsi_mil.export import ome_zarr as export_zarr

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_zarr, "pyramid", broken)
    with pytest.raises(RuntimeError):
        write_heatmap_zarr(tmp_path / "heatmap.zarr", prediction, HeatmapParams())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("normalize", ["rank", "minmax", "raw"])
def test_attention_window_is_the_overlay_colour_range(tmp_path, lesion, normalize):
    """The attention channel's display window is the range its values were put in: [0, 1]
    once normalised, the raw scores' own range for "raw" (a [0, 1] window would clip them)."""
    prediction = lesion.make_prediction("unused.tiff")
    path = write_heatmap_zarr(tmp_path / "h.zarr", prediction, HeatmapParams(normalize=normalize))
    group = zarr.open_group(str(path), mode="r")
    window = ome_metadata(group, "0.4")["omero"]["channels"][0]["window"]
    values = group["0"][0]
    if normalize == "raw":
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        assert (low, high) != pytest.approx((0.0, 1.0))  # raw attention: weights summing to 1
        assert (window["start"], window["end"]) == pytest.approx((low, high), rel=1e-6)
    else:
        assert (window["start"], window["end"]) == (0.0, 1.0)
