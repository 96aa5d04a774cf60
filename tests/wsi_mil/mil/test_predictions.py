import h5py
import numpy as np
import pytest

from wsi_mil.mil.predictions import (
    PredictionFileError,
    SlidePrediction,
    normalise_attention,
    read_prediction,
    read_prediction_attrs,
    write_prediction,
)


def make_prediction(n=4):
    attention = np.linspace(-1, 2, n).astype(np.float32)
    return SlidePrediction(
        slide_id="s1",
        coords=np.arange(2 * n).reshape(n, 2),
        attention=attention,
        attention_norm=normalise_attention(attention),
        tile_probs=np.tile([0.3, 0.7], (n, 1)).astype(np.float32),
        probs=np.array([0.2, 0.8], np.float32),
        class_names=["normal", "tumor"],
        predicted_label="tumor",
        attrs={"slide_mpp": 0.25, "run_id": "r1"},
    )


def test_round_trip(tmp_path):
    pred = make_prediction()
    back = read_prediction(write_prediction(tmp_path / "s1.h5", pred))
    assert back.slide_id == "s1" and back.class_names == ["normal", "tumor"]
    assert back.predicted_label == "tumor"
    np.testing.assert_allclose(back.attention_norm, [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    np.testing.assert_array_equal(back.coords, pred.coords)
    assert back.attrs["slide_mpp"] == 0.25 and back.attrs["run_id"] == "r1"


def test_inconsistent_shapes_are_refused():
    pred = make_prediction()
    with pytest.raises(PredictionFileError, match="4 coords"):
        SlidePrediction(**{**pred.__dict__, "attention": np.zeros(3, np.float32)})
    with pytest.raises(PredictionFileError, match="classes"):
        SlidePrediction(**{**pred.__dict__, "class_names": ["a", "b", "c"]})


def test_normalise_constant_and_empty():
    assert normalise_attention(np.array([2.0, 2.0])).tolist() == [1.0, 1.0]
    assert normalise_attention(np.array([])).size == 0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(PredictionFileError, match="absent.h5"):
        read_prediction(tmp_path / "absent.h5")


def test_branch_attention_and_attributes_alone_round_trip(tmp_path):
    pred = make_prediction()
    pred.branch_attention = np.tile([0.25, 0.75], (4, 1)).astype(np.float32)
    path = write_prediction(tmp_path / "s1.h5", pred)
    np.testing.assert_array_equal(read_prediction(path).branch_attention, pred.branch_attention)
    attrs = read_prediction_attrs(path)
    assert attrs["class_names"] == ["normal", "tumor"] and attrs["run_id"] == "r1"
    assert attrs["probs"].tolist() == pytest.approx([0.2, 0.8])


@pytest.mark.parametrize(
    "kind, name", [("dataset", "attention_norm"), ("attribute", "predicted_label")]
)
def test_a_missing_dataset_or_attribute_is_named(tmp_path, kind, name):
    path = write_prediction(tmp_path / "s1.h5", make_prediction())
    with h5py.File(path, "a") as f:
        del (f if kind == "dataset" else f.attrs)[name]
    with pytest.raises(
        PredictionFileError,
        match=rf"s1.h5: not a wsi-mil predictions file, "
        rf"missing {kind}s \['{name}'\]",
    ):
        read_prediction(path)


def test_a_truncated_or_foreign_file_is_named(tmp_path):
    path = write_prediction(tmp_path / "s1.h5", make_prediction())
    with h5py.File(path, "a") as f:
        data = f["attention"][:2]
        del f["attention"]
        f["attention"] = data
    with pytest.raises(PredictionFileError, match="s1.h5: s1: 4 coords but"):
        read_prediction(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    for read in (read_prediction, read_prediction_attrs):
        with pytest.raises(PredictionFileError, match="junk.h5: cannot read HDF5 file"):
            read(tmp_path / "junk.h5")
    with pytest.raises(PredictionFileError, match="absent.h5: predictions file not found"):
        read_prediction_attrs(tmp_path / "absent.h5")
