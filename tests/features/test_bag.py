import h5py
import numpy as np
import pytest

from features.bag import BagError, add_tile_labels, is_complete_bag, read_bag_attrs, write_bag
from tiling.tiles_file import read_tiles_file, write_tiles_file

ENCODER = {"encoder": "toy", "encoder_dim": 4, "weights": "none", "weights_sha256": "0" * 64,
           "input_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3, "dtype": "float16"}


@pytest.fixture
def tiles(tmp_path, tiles_attrs):
    path = write_tiles_file(tmp_path / "s1.h5", [[0, 0], [512, 0], [0, 512]], [1, 1, 0.5],
                            tiles_attrs())
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
        write_bag(tmp_path / "s1.h5", np.zeros((3, 4)),
                  tiles, {k: v for k, v in ENCODER.items() if k != "weights_sha256"})


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
