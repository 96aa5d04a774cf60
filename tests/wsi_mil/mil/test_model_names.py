"""The torch-free list of model names that TrainParams checks is the registry's list."""

from __future__ import annotations

from wsi_mil.mil.model_names import MODEL_NAMES, registered_names
from wsi_mil.mil.models import list_models


def test_model_names_match_the_registry():
    assert list(MODEL_NAMES) == list_models()


def test_a_model_in_a_new_module_is_found_by_its_decorator(tmp_path):
    (tmp_path / "mine.py").write_text(
        '@register_model("my_mil")\nclass Mine:\n    pass\n\n'
        '@other("not_a_model")\nclass Other:\n    pass\n'
    )
    assert registered_names(tmp_path) == ("my_mil",)
