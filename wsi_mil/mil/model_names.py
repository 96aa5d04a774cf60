"""The MIL models' registry names, read without torch.

:class:`wsi_mil.mil.params.TrainParams` checks a model name against this list, so reading a
config or building ``--help`` never imports the models (which need torch). The names are read
from the source of the model modules (the ``@register_model("name")`` decorators, parsed with
:mod:`ast`), so the registry stays the one definition and a new model is added in its own
module alone; ``tests/wsi_mil/mil/test_model_names.py`` checks the two lists agree.
"""

from __future__ import annotations

import ast
from pathlib import Path

#: The folder of the model modules (:mod:`wsi_mil.mil.models`).
MODELS_DIR = Path(__file__).resolve().parent / "models"


def registered_names(folder: Path = MODELS_DIR) -> tuple[str, ...]:
    """Sorted names of every ``@register_model("name")`` class in the modules of ``folder``."""
    names = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for decorator in node.decorator_list:
                    if (
                        isinstance(decorator, ast.Call)
                        and isinstance(decorator.func, ast.Name)
                        and decorator.func.id == "register_model"
                        and decorator.args
                        and isinstance(decorator.args[0], ast.Constant)
                    ):
                        names.append(str(decorator.args[0].value))
    return tuple(sorted(names))


#: Sorted, as :func:`wsi_mil.mil.models.list_models` returns them.
MODEL_NAMES = registered_names()
