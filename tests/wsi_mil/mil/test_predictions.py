import numpy as np
import pytest

from wsi_mil.mil.predictions import (
    PredictionFileError,
    SlidePrediction,
    normalise_attention,
    read_prediction,
    write_prediction,
)


def make_prediction(n=4):
    attention = np.linspace(-1, 2, n).astype(np.float32)
    return SlidePrediction(
        slide_id="s1", coords=np.arange(2 * n).reshape(n, 2), attention=attention,
        attention_norm=normalise_attention(attention),
        tile_probs=np.tile([0.3, 0.7], (n, 1)).astype(np.float32),
        probs=np.array([0.2, 0.8], np.float32), class_names=["normal", "tumor"],
        predicted_label="tumor", attrs={"slide_mpp": 0.25, "run_id": "r1"},
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
