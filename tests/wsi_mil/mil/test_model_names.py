"""The torch-free list of model names that TrainParams checks is the registry's list."""

from __future__ import annotations

from wsi_mil.mil.model_names import MODEL_NAMES
from wsi_mil.mil.models import list_models


def test_model_names_match_the_registry():
    assert list(MODEL_NAMES) == list_models(), (
        "wsi_mil/mil/model_names.py and the model registry differ: add the new model's name to "
        "MODEL_NAMES")
