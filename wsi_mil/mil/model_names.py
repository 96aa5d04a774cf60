"""The MIL models' registry names, without torch.

:class:`wsi_mil.mil.params.TrainParams` checks a model name against this list, so reading a
config or building ``--help`` never imports the models (which need torch). The registry in
:mod:`wsi_mil.mil.models` is the definition; ``tests/wsi_mil/mil/test_model_names.py`` fails
when the two differ, so a new model is added here and in its module.
"""

from __future__ import annotations

#: Sorted, as :func:`wsi_mil.mil.models.list_models` returns them.
MODEL_NAMES = ("abmil", "clam_mb", "clam_sb", "gated_abmil", "max_pool", "mean_pool",
               "transformer_mil", "transmil")
