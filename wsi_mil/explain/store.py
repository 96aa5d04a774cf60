"""``explain/<slide_id>/explanations.h5``: one slide's explanation maps, read back.

Datasets: ``coords`` ``[N, 2]`` (the bag's tile order), one ``[N]`` dataset per method (attrs
``model``, ``method``, ``target_class``, ``seconds``; ``lrp`` also ``logit`` and
``bias_share``, its conservation), ``lesion_fraction`` ``[N]`` when the slide was annotated.
Attributes: ``methods``, ``scores`` (method -> metric -> value), ``patch_flipping``
(``fractions``, the ``random`` curve, and per method its ``morf`` and ``lerf`` curves) and
``mprt`` (the cascade's ``stages`` and per method the Spearman after each), all JSON; the
model, run and checkpoint, ``fold`` (the fold model that explained the slide), ``in_sample``
(whether that fold trained on it) and ``fold_choice`` (why that fold); and ``complete`` =
True, written last. Written by :mod:`wsi_mil.pipeline.explain`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

EXPLANATIONS = "explanations.h5"


def read_explanations(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(method -> per-tile scores, attributes with the JSON ones decoded) of an explanations
    file (``patch_flipping`` and ``mprt`` are {} in files of earlier releases)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: explanations file not found")
    with h5py.File(path, "r") as f:
        if not f.attrs.get("complete", False):
            raise ValueError(f"{path}: not a complete explanations file")
        methods = json.loads(f.attrs["methods"])
        maps = {m: f[m][:] for m in methods}
        attrs = {k: f.attrs[k] for k in f.attrs}
    for key in ("scores", "patch_flipping", "mprt"):
        attrs[key] = json.loads(attrs[key]) if key in attrs else {}
    return maps, attrs
