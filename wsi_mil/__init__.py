"""Attention-MIL for whole-slide images: tiles at a physical resolution, encoder features,
gated attention-MIL with a tile-level segmentation head, heatmaps, QuPath and OME-Zarr exports.

The public Python API is the handful of names below; each stage is a function over a folder,
the same function the ``wsi-mil`` verb of that stage calls::

    import wsi_mil
    wsi_mil.tile_slides(["slides/"], "project/", wsi_mil.TilingParams(target_mpp=0.5))
    wsi_mil.extract_slides("project/tiles", "project/features")
    wsi_mil.train_run("project/features/efficientnet_lite0", "labels.csv", "project/runs/abmil")
    wsi_mil.predict_slides("project/runs/abmil", "project/features/efficientnet_lite0", "project/")

Names are imported on first use, so ``import wsi_mil`` stays instant and loads torch only when
a stage that needs it is called.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_API = {
    # parameters (one dataclass per stage; the YAML sections and verb flags are these fields)
    "TilingParams": "tiling.params",
    "ExtractParams": "features.params",
    "TrainParams": "wsi_mil.mil.params",
    "PredictParams": "wsi_mil.mil.params",
    "HeatmapParams": "wsi_mil.heatmaps.params",
    "CohortParams": "wsi_mil.synthetic.params",
    # the stages, in pipeline order
    "generate_cohort": "wsi_mil.pipeline.cohort",
    "tile_slides": "wsi_mil.pipeline.tile",
    "extract_slides": "wsi_mil.pipeline.extract",
    "train_run": "wsi_mil.mil.train",
    "predict_slides": "wsi_mil.pipeline.predict",
    "heatmap_slides": "wsi_mil.pipeline.heatmap",
    "evaluate_predictions": "wsi_mil.pipeline.evaluate",
    # everything from one config
    "load_config": "wsi_mil.pipeline.config",
    "run_pipeline": "wsi_mil.pipeline.run",
    # files and models
    "read_prediction": "wsi_mil.mil.predictions",
    "create_model": "wsi_mil.mil.models",
    "list_models": "wsi_mil.mil.models",
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'wsi_mil' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
