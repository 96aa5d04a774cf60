"""``explanations.h5``: written and read by one module, errors that name the file, files of
earlier releases and hand-made files still read."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from wsi_mil.errors import MissingInputError, WsiMilError
from wsi_mil.explain.store import (
    Explanations,
    ExplanationsFileError,
    read_explanations,
    write_explanations,
)


def make_explanations(n: int = 5) -> Explanations:
    maps = {
        "attention": np.linspace(0, 1, n, dtype=np.float32),
        "lrp": np.linspace(-1, 1, n, dtype=np.float32),
    }
    map_attrs = {
        m: {"model": "gated_abmil", "method": m, "seconds": 0.5, "target_class": "pos"}
        for m in maps
    }
    map_attrs["lrp"].update(logit=1.5, bias_share=1.5)
    attrs = {
        "model": "gated_abmil",
        "fold": 1,
        "in_sample": False,
        "slide_id": "0001",
        "annotation_path": None,
        "class_names": ["neg", "pos"],
        "probs": [0.3, 0.7],
        "scores": {"lrp": {"srg": 0.25}},
        "patch_flipping": {"fractions": [0.0, 0.5]},
        "mprt": {"stages": ["head"], "lrp": [0.1]},
        "params": {"methods": None},
    }
    return Explanations(
        coords=np.arange(2 * n).reshape(n, 2),
        maps=maps,
        map_attrs=map_attrs,
        attrs=attrs,
        lesion_fraction=np.zeros(n, np.float32),
    )


def test_round_trip(tmp_path):
    written = make_explanations()
    back = read_explanations(write_explanations(tmp_path / "explanations.h5", written))
    assert list(back.maps) == ["attention", "lrp"]
    for method, values in written.maps.items():
        np.testing.assert_array_equal(back.maps[method], values)
        assert back.map_attrs[method] == written.map_attrs[method]
    np.testing.assert_array_equal(back.coords, written.coords)
    np.testing.assert_array_equal(back.lesion_fraction, written.lesion_fraction)
    for key, value in written.attrs.items():
        assert back.attrs[key] == value, key
    assert back.attrs["methods"] == ["attention", "lrp"] and back.attrs["complete"] is True
    assert back.scores == {"lrp": {"srg": 0.25}} and back.attrs["slide_id"] == "0001"
    # the stored layout of every release: lists, dicts and None as plain JSON text
    with h5py.File(tmp_path / "explanations.h5") as f:
        assert f.attrs["class_names"] == json.dumps(["neg", "pos"])
        assert f.attrs["annotation_path"] == "null" and f.attrs["fold"] == 1


def test_a_map_of_the_wrong_length_is_refused(tmp_path):
    written = make_explanations()
    written.maps["lrp"] = np.zeros(4, np.float32)
    with pytest.raises(ExplanationsFileError, match=r"explanations.h5: maps \{'lrp': \(4,\)\}"):
        write_explanations(tmp_path / "explanations.h5", written)
    assert not (tmp_path / "explanations.h5").exists()


@pytest.mark.parametrize("attribute", ["complete", "scores", "methods"])
def test_a_missing_attribute_is_named(tmp_path, attribute):
    path = write_explanations(tmp_path / "explanations.h5", make_explanations())
    with h5py.File(path, "a") as f:
        del f.attrs[attribute]
    with pytest.raises(
        ExplanationsFileError,
        match=rf"explanations.h5: not a complete explanations file "
        rf"\(attributes missing \['{attribute}'\]\)",
    ):
        read_explanations(path)


def test_a_missing_map_unreadable_or_absent_file_is_named(tmp_path):
    path = write_explanations(tmp_path / "explanations.h5", make_explanations())
    with h5py.File(path, "a") as f:
        del f["lrp"]
    with pytest.raises(ExplanationsFileError, match=r"methods \['lrp'\] are listed but have no"):
        read_explanations(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ExplanationsFileError, match="junk.h5: cannot read HDF5 file"):
        read_explanations(tmp_path / "junk.h5")
    with pytest.raises(MissingInputError, match="absent.h5: explanations file not found"):
        read_explanations(tmp_path / "absent.h5")
    assert issubclass(ExplanationsFileError, WsiMilError)


def test_a_hand_made_file_reads_when_completeness_is_not_required(tmp_path):
    """What the viewer shows: every per-tile dataset of a file without ``methods``."""
    path = tmp_path / "explanations.h5"
    with h5py.File(path, "w") as f:
        f["gradcam"] = np.arange(3, dtype=np.float32)
        f["lesion_fraction"] = np.zeros(3, np.float32)
    with pytest.raises(ExplanationsFileError, match="not a complete explanations file"):
        read_explanations(path)
    stored = read_explanations(path, require_complete=False)
    assert list(stored.maps) == ["gradcam"] and stored.coords is None and stored.scores == {}
