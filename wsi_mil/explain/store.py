"""``explain/<slide_id>/explanations.h5``: one slide's explanation maps, read back.

Datasets: ``coords`` ``[N, 2]`` (the bag's tile order), one ``[N]`` dataset per method (attrs
``model``, ``method``, ``target_class``, ``seconds``), ``lesion_fraction`` ``[N]`` when the slide
was annotated. Attributes: ``methods`` and ``scores`` (JSON), the model, run and checkpoint,
and ``complete`` = True, written last. Written by :mod:`wsi_mil.pipeline.explain`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

EXPLANATIONS = "explanations.h5"


def read_explanations(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(method -> per-tile scores, attributes with ``scores`` decoded) of an explanations file."""
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
    attrs["scores"] = json.loads(attrs["scores"])
    return maps, attrs
