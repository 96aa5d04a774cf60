import h5py
import numpy as np
import pytest

from features.bag import (
    BagError,
    add_tile_labels,
    is_complete_bag,
    read_bag_attrs,
    read_bag_coords,
    read_bag_features,
    read_bag_tile_labels,
    read_bag_view,
    write_bag,
)
from tiling.tiles_file import read_tiles_file, write_tiles_file

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


@pytest.fixture
def tiles(tmp_path, tiles_attrs):
    path = write_tiles_file(
        tmp_path / "s1.h5", [[0, 0], [512, 0], [0, 512]], [1, 1, 0.5], tiles_attrs()
    )
    return read_tiles_file(path)


def test_bag_carries_tiles_and_encoder_attributes(tmp_path, tiles):
    feats = np.arange(12, dtype=np.float16).reshape(3, 4)
    path = write_bag(tmp_path / "bags" / "s1.h5", feats, tiles, ENCODER)
    assert is_complete_bag(path)
    attrs = read_bag_attrs(path)
    assert attrs["encoder"] == "toy" and attrs["slide_mpp"] == 0.25 and attrs["num_tiles"] == 3
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["features"][:], feats)
        np.testing.assert_array_equal(f["coords"][:], tiles.coords)


def test_shape_mismatch_and_missing_encoder_attrs_are_refused(tmp_path, tiles):
    with pytest.raises(BagError, match="do not match 3 tiles"):
        write_bag(tmp_path / "s1.h5", np.zeros((2, 4)), tiles, ENCODER)
    with pytest.raises(BagError, match="weights_sha256"):
        write_bag(
            tmp_path / "s1.h5",
            np.zeros((3, 4)),
            tiles,
            {k: v for k, v in ENCODER.items() if k != "weights_sha256"},
        )


def test_incomplete_bag_is_not_trusted(tmp_path):
    path = tmp_path / "half.h5"
    with h5py.File(path, "w") as f:
        f["features"] = np.zeros((3, 4))
    assert not is_complete_bag(path)
    with pytest.raises(BagError, match="half.h5"):
        read_bag_attrs(path)


def test_add_tile_labels(tmp_path, tiles):
    path = write_bag(tmp_path / "s1.h5", np.zeros((3, 4), np.float16), tiles, ENCODER)
    add_tile_labels(path, [0.0, 1.0, 0.25], source="lesions.xml")
    add_tile_labels(path, [0.0, 1.0, 0.5], source="lesions.xml")
    with h5py.File(path) as f:
        assert f["tile_labels"][:].tolist() == [0.0, 1.0, 0.5]
        assert f.attrs["tile_labels_source"] == "lesions.xml"
    with pytest.raises(BagError, match="2 tile labels for 3 tiles"):
        add_tile_labels(path, [0.0, 1.0], source="x")


def test_round_trip_of_every_reader(tmp_path, tiles):
    feats = np.arange(12, dtype=np.float16).reshape(3, 4)
    views = np.stack([feats + 1, feats + 2], axis=1)
    path = write_bag(tmp_path / "s1.h5", feats, tiles, ENCODER, {"stain_views": views})
    add_tile_labels(path, [0.0, 1.0, 0.5], source="test")
    np.testing.assert_array_equal(read_bag_features(path, np.array([0, 2])), feats[[0, 2]])
    np.testing.assert_array_equal(read_bag_coords(path), tiles.coords)
    np.testing.assert_array_equal(read_bag_view(path, 2), feats + 2)
    assert read_bag_tile_labels(path).tolist() == [0.0, 1.0, 0.5]
    attrs = read_bag_attrs(path)
    assert (attrs["feature_dim"], attrs["has_tile_labels"]) == (4, True)
    assert attrs["tile_labels_source"] == "test" and attrs["tiles_file"] == str(tiles.path)


def test_a_missing_dataset_or_attribute_or_file_is_named(tmp_path, tiles):
    path = write_bag(tmp_path / "s1.h5", np.zeros((3, 4), np.float16), tiles, ENCODER)
    with h5py.File(path, "a") as f:
        del f.attrs["weights"]
        del f["coords"]
    with pytest.raises(BagError, match=r"s1.h5: feature bag attributes missing \['weights'\]"):
        read_bag_attrs(path)
    with pytest.raises(BagError, match="s1.h5: no 'coords' dataset"):
        read_bag_coords(path)
    with pytest.raises(BagError, match="s1.h5: no stain-augmented view 1"):
        read_bag_view(path, 1)
    with pytest.raises(BagError, match="absent.h5: cannot read feature bag"):
        read_bag_features(tmp_path / "absent.h5")
