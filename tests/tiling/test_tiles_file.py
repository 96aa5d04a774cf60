import h5py
import numpy as np
import pytest

from tiling.params import TilingParams
from tiling.pipeline import tile_slide
from tiling.tiles_file import REQUIRED_ATTRS, TilesFileError, read_tiles_file, write_tiles_file
from wsi_mil.synthetic.pyramid_tiff import Rect


def test_round_trip(tmp_path, tiles_attrs):
    coords = np.array([[0, 0], [512, 0]])
    path = write_tiles_file(tmp_path / "s1.h5", coords, [0.9, 0.6], tiles_attrs())
    tiles = read_tiles_file(path)
    assert tiles.coords.dtype == np.int64 and tiles.coords.tolist() == coords.tolist()
    assert tiles.tissue_fraction.dtype == np.float32
    assert tiles.attrs["tissue_params"] == {"blur": 7}
    assert set(REQUIRED_ATTRS) <= set(tiles.attrs)
    assert tiles.slide_id == "s1" and len(tiles) == 2


def test_missing_attribute_is_refused(tmp_path, tiles_attrs):
    attrs = tiles_attrs()
    del attrs["slide_mpp"]
    with pytest.raises(ValueError, match="slide_mpp"):
        write_tiles_file(tmp_path / "s1.h5", np.zeros((1, 2)), [1.0], attrs)


def test_length_mismatch_is_refused(tmp_path, tiles_attrs):
    with pytest.raises(ValueError, match="2 coordinates but 1"):
        write_tiles_file(tmp_path / "s1.h5", np.zeros((2, 2)), [1.0], tiles_attrs())


def test_reading_a_foreign_file_names_it(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = [1]
    with pytest.raises(TilesFileError, match="other.h5.*not a wsi-mil tiles file"):
        read_tiles_file(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(TilesFileError, match="junk.h5.*cannot read"):
        read_tiles_file(tmp_path / "junk.h5")
    with pytest.raises(TilesFileError, match="not found"):
        read_tiles_file(tmp_path / "absent.h5")


def test_a_missing_dataset_or_attribute_is_named_on_reading(tmp_path, tiles_attrs):
    path = write_tiles_file(tmp_path / "s1.h5", [[0, 0]], [1.0], tiles_attrs())
    with h5py.File(path, "a") as f:
        del f.attrs["stride"]
    with pytest.raises(TilesFileError, match=r"s1.h5: tiles file attributes missing \['stride'\]"):
        read_tiles_file(path)
    with h5py.File(path, "a") as f:
        del f["tissue_fraction"]
    with pytest.raises(TilesFileError, match="s1.h5: not a wsi-mil tiles file.*tissue_fraction"):
        read_tiles_file(path)


def test_a_tiled_slide_holds_exactly_what_the_docs_list(make_slide, tmp_path, file_contract):
    """docs/formats.md's tiles table is what ``wsi-mil tile`` writes, and its *always* rows are
    what the writer insists on."""
    slide = make_slide("contract.tif", 2048, 1536, 0.25, [Rect(512, 256, 1536, 1280)])
    path = tile_slide(slide, tmp_path, TilingParams(min_tissue=0.5))
    file_contract.check(path, "tiles/<slide_id>.h5")
    always = {
        name
        for (kind, name), when in file_contract.documented("tiles/<slide_id>.h5").items()
        if kind == "attribute" and when == "always"
    }
    assert always == set(REQUIRED_ATTRS)
