"""Model registry: ``create_model(name, in_dim, n_classes, **kwargs)``, as timm's.

A run stores the registry name and the keyword arguments beside its state dict, so
:func:`create_model` can rebuild the exact module at prediction time without pickled code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsi_mil.mil.models.base import MILModel

_MODELS: dict[str, type[MILModel]] = {}


def register_model(name: str) -> Callable[[type[MILModel]], type[MILModel]]:
    """Class decorator adding a model to the registry under ``name``."""

    def add(cls: type[MILModel]) -> type[MILModel]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return add


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_class(name: str) -> type[MILModel]:
    """The registered class of ``name`` (what it supports, before one is built)."""
    if name not in _MODELS:
        raise ValueError(f"unknown MIL model {name!r}; available: {list_models()}")
    return _MODELS[name]


def create_model(name: str, in_dim: int, n_classes: int, **kwargs: Any) -> MILModel:
    """Build a registered model; an unknown name lists the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown MIL model {name!r}; available: {list_models()}")
    return _MODELS[name](in_dim=in_dim, n_classes=n_classes, **kwargs)
