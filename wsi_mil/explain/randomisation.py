"""Model-parameter randomisation for the sanity check (Adebayo et al., "Sanity Checks for
Saliency Maps", NeurIPS 2018): the whole model at once, or layer by layer from the output.

The cascading test (Adebayo et al.'s "cascading randomization", MPRT in Quantus, Hedström et
al. 2023) re-initialises the model's layers one group at a time, from the output towards the
input, and explains the model after each step: an explanation that depends on what the model
learnt changes as soon as the layers it reads are randomised; one that does not (an edge
detector of the input) survives to the last layer. The groups (:func:`cascade_groups`) are the
output heads first (the slide classifier(s), the segmentation head, CLAM's instance
classifiers), then the model's top-level blocks in reverse order of their first call in a
forward pass (each transformer layer is one block); parameters held by the model itself (a
transformer's class token) go with the first block called. The last stage has every parameter
re-initialised: the full model randomisation of the original check.

Re-initialisation uses each module's own ``reset_parameters`` (PyTorch's initialisation for
Linear, Conv and LayerNorm, the ones training started from); a parameter no module resets
(a class token) is drawn from N(0, 0.02). Every randomised model is a copy: the trained model
is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from wsi_mil.mil.models import MILModel

#: top-level modules that read the model's output representation: randomised first.
HEADS = ("classifier", "classifiers", "tile_head", "instance_classifiers")


@dataclass(frozen=True)
class CascadeStage:
    """One step of the cascade: the groups randomised so far (this one last)."""

    name: str  # the group randomised at this step
    modules: tuple[str, ...]  # qualified names of every module re-initialised by now


def _top_level_groups(model: MILModel) -> dict[str, list[str]]:
    """Group name -> qualified names of the modules with parameters in it."""
    groups: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if not name or not any(True for _ in module.parameters(recurse=False)):
            continue
        parts = name.split(".")
        top = parts[0]
        if isinstance(getattr(model, top), nn.ModuleList) and len(parts) > 1:
            top = f"{top}.{parts[1]}"
        groups.setdefault("heads" if parts[0] in HEADS else top, []).append(name)
    return groups


def _call_order(model: MILModel, groups: dict[str, list[str]]) -> list[str]:
    """Groups in the order a forward pass first calls one of their modules."""
    first: dict[str, int] = {}
    owner = {m: g for g, names in groups.items() for m in names}
    modules = dict(model.named_modules())
    hooks = []

    def seen(group: str) -> None:
        first.setdefault(group, len(first))

    for name, group in owner.items():
        hooks.append(modules[name].register_forward_hook(lambda *_, g=group: seen(g)))
    device = next(model.parameters()).device
    x = torch.zeros(3, model.in_dim, device=device)
    coords = torch.zeros(3, 2, device=device) if model.uses_coords else None
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x, coords=coords)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sorted(groups, key=lambda g: first.get(g, len(first)))


def cascade_groups(model: MILModel) -> list[str]:
    """The groups in the order the cascade randomises them: heads, then blocks output first."""
    groups = _top_level_groups(model)
    order = [g for g in _call_order(model, groups) if g != "heads"]
    return (["heads"] if "heads" in groups else []) + order[::-1]


def _reinitialise(model: nn.Module, names: list[str]) -> None:
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            with torch.no_grad():
                for param in module.parameters(recurse=False):
                    param.normal_(0.0, 0.02)


def _copy(model: MILModel) -> MILModel:
    if hasattr(model, "records"):
        # recorded attention is part of an autograd graph: not copyable
        model.records = []  # type: ignore[assignment]
    return copy.deepcopy(model)


def cascading_randomisations(
    model: MILModel, seed: int = 0
) -> Iterator[tuple[CascadeStage, MILModel]]:
    """Yield ``(stage, model copy)`` for each step of the cascade (see the module docstring);
    the copies accumulate: step ``k`` has the first ``k + 1`` groups re-initialised."""
    torch.manual_seed(seed)
    groups, order = _top_level_groups(model), cascade_groups(model)
    clone, done = _copy(model), []
    for group in order:
        _reinitialise(clone, groups[group])
        done += groups[group]
        if group == order[-1]:  # the model's own parameters (a class token)
            with torch.no_grad():
                for param in clone.parameters(recurse=False):
                    param.normal_(0.0, 0.02)
        yield CascadeStage(group, tuple(done)), _copy(clone).eval()


def randomised_copy(model: MILModel, seed: int = 0) -> MILModel:
    """The model with every weight re-initialised (Adebayo et al.'s full model-parameter
    randomisation, the cascade's last stage): a copy, so the trained model is untouched."""
    *_, (_, clone) = cascading_randomisations(model, seed)
    return clone
