"""Model registry: ``create_model(name, in_dim, n_classes, **kwargs)``, as timm's.

A run stores the registry name and the keyword arguments beside its state dict, so
:func:`create_model` can rebuild the exact module at prediction time without pickled code.

**A model declares what it accepts; the factory drops the rest** (timm's rule). A model's
keyword arguments are the named parameters of its ``__init__`` and of the classes it passes
``**kwargs`` on to (:func:`accepted_kwargs`). The training settings give every model every
model setting (:meth:`wsi_mil.mil.params.TrainParams.model_kwargs`: ``k_sample`` reaches only
CLAM, ``positional`` only ``transformer_mil``), so adding a model touches its own module alone:
its ``@register_model`` name is read from the source without torch
(:mod:`wsi_mil.mil.model_names`). A keyword no registered model accepts is a typo and an error.
"""

from __future__ import annotations

import inspect
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


def accepted_kwargs(cls: type[MILModel]) -> frozenset[str]:
    """The keyword arguments ``cls`` accepts: the named parameters of its ``__init__``, and of
    each base class's ``__init__`` it reaches through ``**kwargs`` (down to :class:`MILModel`)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {
            p.name
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in ("self", "in_dim", "n_classes")
        }
        if klass is MILModel or not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return frozenset(names)


def create_model(name: str, in_dim: int, n_classes: int, **kwargs: Any) -> MILModel:
    """Build a registered model from the keyword arguments it accepts, dropping the others
    (another model's settings); an unknown name lists the known ones, and a keyword that no
    registered model accepts is an error (a misspelt setting must not be dropped unseen)."""
    cls = model_class(name)
    known = frozenset().union(*(accepted_kwargs(c) for c in _MODELS.values()))
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"no MIL model takes {unknown}; model settings are {sorted(known)}")
    accepted = accepted_kwargs(cls)
    return cls(
        in_dim=in_dim,
        n_classes=n_classes,
        **{key: value for key, value in kwargs.items() if key in accepted},
    )
