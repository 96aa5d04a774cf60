"""MIL models behind a registry: ``create_model(name, in_dim, n_classes, **kwargs)``.

``gated_abmil`` (default), ``abmil``, ``clam_sb``, ``clam_mb``, ``mean_pool``, ``max_pool``,
``transmil`` and ``transformer_mil``.
Every model returns a :class:`MILOutput`: slide logits, per-tile attention (softmax over real
tiles, 0 on padding), raw attention scores and per-tile class scores from the tile-level
segmentation head.
"""

import importlib
import pkgutil

from wsi_mil.mil.models.base import MILModel, MILOutput
from wsi_mil.mil.models.registry import create_model, list_models, register_model
from wsi_mil.mil.params import DEFAULT_MODEL

# Importing every module of this package registers its models: a new model is one new module
# (or one class in an existing one), listed nowhere else.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DEFAULT_MODEL",
    "MILModel",
    "MILOutput",
    "create_model",
    "list_models",
    "register_model",
]
