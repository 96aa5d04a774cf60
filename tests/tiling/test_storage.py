import h5py
import numpy as np
import pytest

from tiling.storage import (
    atomic_output,
    decode_attr,
    encode_attr,
    provenance,
    read_attrs,
    tmp_path_for,
    write_attrs,
    write_text_atomic,
)


def test_atomic_output_moves_file_into_place(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_output(target) as tmp:
        assert tmp == tmp_path_for(target)
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    assert not tmp_path_for(target).exists()


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert not tmp_path_for(target).exists()


def test_atomic_output_removes_stale_tmp_and_replaces_directories(tmp_path):
    target = tmp_path / "store.zarr"
    (tmp_path / "store.zarr.tmp").mkdir()
    (tmp_path / "store.zarr.tmp" / "stale").write_text("from a killed run")
    target.mkdir()
    (target / "old").write_text("previous output")
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("x")
    assert sorted(p.name for p in target.iterdir()) == ["new"]


def test_write_text_atomic(tmp_path):
    write_text_atomic(tmp_path / "f.csv", "a,b\n")
    assert (tmp_path / "f.csv").read_text() == "a,b\n"


@pytest.mark.parametrize(
    "value",
    [1, 2.5, "text", True, None, {"a": 1, "b": [1, 2]}, ["tumor", "normal"], [[1, 2], [3, 4]]],
)
def test_attr_round_trip_through_hdf5(tmp_path, value):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        write_attrs(f, {"value": value})
    with h5py.File(path, "r") as f:
        back = read_attrs(f)["value"]
    assert back == value or np.array_equal(back, value)


def test_numeric_lists_are_stored_as_arrays():
    assert isinstance(encode_attr([0.5, 0.5, 0.5]), np.ndarray)
    assert decode_attr(np.float32(0.25)) == 0.25


def test_provenance_has_version_and_time():
    p = provenance()
    assert p["wsi_mil_version"]
    assert p["created"].endswith("+00:00")
