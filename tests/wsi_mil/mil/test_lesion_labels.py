"""Tile labels from annotations land in the bag, right by hand."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from shapely.geometry import box

from features.bag import write_bag
from tiling.annotations import write_asap_xml
from tiling.tiles_file import read_tiles_file, write_tiles_file
from wsi_mil.mil.lesion_labels import label_bag, label_bags

ENCODER = {
    "encoder": "toy",
    "encoder_dim": 4,
    "weights": "none",
    "weights_sha256": "0" * 64,
    "input_size": 224,
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
    "dtype": "float16",
}


def make_bag(tmp_path, tiles_attrs, slide_id: str):
    coords = [[0, 0], [512, 0], [0, 512], [512, 512]]
    tiles = read_tiles_file(
        write_tiles_file(
            tmp_path / "tiles" / f"{slide_id}.h5",
            coords,
            [1, 1, 1, 1],
            tiles_attrs(slide_id=slide_id),
        )
    )
    return write_bag(
        tmp_path / "features" / f"{slide_id}.h5", np.zeros((4, 4), np.float16), tiles, ENCODER
    )


def test_label_bag_from_xml(tmp_path, tiles_attrs) -> None:
    bag = make_bag(tmp_path, tiles_attrs, "tumor_001")
    # lesion covers all of tile 0 and the left half of tile 1 (tiles are 512 level-0 px)
    xml = write_asap_xml(tmp_path / "ann" / "Tumor_001.xml", box(0, 0, 768, 512))
    labels = label_bag(bag, xml)
    np.testing.assert_allclose(labels, [1.0, 0.5, 0.0, 0.0])
    with h5py.File(bag) as f:
        np.testing.assert_allclose(f["tile_labels"][:], [1.0, 0.5, 0.0, 0.0])
        assert "Tumor_001.xml" in f.attrs["tile_labels_source"]


def test_label_bags_normal_zero_tumour_without_annotation_reported(tmp_path, tiles_attrs):
    for slide_id in ("tumor_001", "normal_001", "tumor_002"):
        make_bag(tmp_path, tiles_attrs, slide_id)
    write_asap_xml(tmp_path / "ann" / "tumor_001.xml", box(0, 0, 512, 512))
    labels = {"tumor_001": "tumor", "normal_001": "normal", "tumor_002": "tumor"}
    with pytest.warns(UserWarning, match="tumor_002"):
        result = label_bags(tmp_path / "features", tmp_path / "ann", labels)
    assert result.labelled == ["tumor_001"] and result.normal == ["normal_001"]
    assert result.unlabelled == ["tumor_002"]
    with h5py.File(tmp_path / "features" / "normal_001.h5") as f:
        assert f["tile_labels"][:].tolist() == [0.0] * 4
    with h5py.File(tmp_path / "features" / "tumor_002.h5") as f:
        assert "tile_labels" not in f
