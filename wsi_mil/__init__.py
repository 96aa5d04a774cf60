"""Attention-MIL for whole-slide images: tiles at a physical resolution, encoder features,
gated attention-MIL with a tile-level segmentation head, heatmaps, QuPath and OME-Zarr exports.

The public Python API is ``__all__`` below: the stages' parameter classes, the stage functions
(each over a folder, the function the ``wsi-mil`` verb of that stage calls), the config runner,
readers and factories, ``__version__`` and the user-error classes of :mod:`wsi_mil.errors`::

    import wsi_mil
    project = wsi_mil.Project("project/")
    wsi_mil.tile_slides(["slides/"], out=project, params=wsi_mil.TilingParams(target_mpp=0.5))
    wsi_mil.extract_slides(project.tiles_dir, out=project)
    bags = project.features_dir("efficientnet_lite0")
    wsi_mil.train_run(bags, "labels.csv", out=project, name="abmil")
    wsi_mil.predict_slides(project.run_dir("abmil"), bags, out=project)

Every stage function takes its inputs first, named for what they hold, then keywords only;
``out`` is the project folder (:class:`Project`), where the stage writes its own folder.

Names are imported on first use, so ``import wsi_mil`` stays instant and loads torch only when
a stage that needs it is called.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from wsi_mil.errors import InputError, MissingInputError, WsiMilError

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports
    from features.params import ExtractParams
    from features.registry import create_encoder, list_encoders
    from tiling.params import TilingParams
    from wsi_mil.config.executor import ExecutorParams
    from wsi_mil.config.pipeline import PipelineConfig, load_config
    from wsi_mil.explain.params import ExplainParams
    from wsi_mil.heatmaps.params import HeatmapParams
    from wsi_mil.mil.models import create_model, list_models
    from wsi_mil.mil.params import PredictParams, TrainParams
    from wsi_mil.mil.predictions import read_prediction
    from wsi_mil.pipeline.cohort import generate_cohort
    from wsi_mil.pipeline.evaluate import evaluate_predictions
    from wsi_mil.pipeline.explain import explain_slides
    from wsi_mil.pipeline.extract import extract_slides
    from wsi_mil.pipeline.heatmap import heatmap_slides
    from wsi_mil.pipeline.predict import predict_slides
    from wsi_mil.pipeline.run import run_pipeline
    from wsi_mil.pipeline.segment import segment_slides, segment_train
    from wsi_mil.pipeline.tile import tile_slides
    from wsi_mil.pipeline.train import train_run
    from wsi_mil.project import Project
    from wsi_mil.segment.params import SegmentParams, SegmentTrainParams
    from wsi_mil.synthetic.params import CohortParams

try:
    __version__ = version("wsi-mil")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

#: public name -> module that defines it (imported on first use)
_API = {
    # parameters (one dataclass per stage; the YAML sections and verb flags are these fields)
    "TilingParams": "tiling.params",
    "ExtractParams": "features.params",
    "TrainParams": "wsi_mil.mil.params",
    "PredictParams": "wsi_mil.mil.params",
    "HeatmapParams": "wsi_mil.heatmaps.params",
    "ExplainParams": "wsi_mil.explain.params",
    "SegmentTrainParams": "wsi_mil.segment.params",
    "SegmentParams": "wsi_mil.segment.params",
    "CohortParams": "wsi_mil.synthetic.params",
    "ExecutorParams": "wsi_mil.config.executor",
    # the project folder every stage writes into
    "Project": "wsi_mil.project",
    # the stages, in pipeline order
    "generate_cohort": "wsi_mil.pipeline.cohort",
    "tile_slides": "wsi_mil.pipeline.tile",
    "extract_slides": "wsi_mil.pipeline.extract",
    "train_run": "wsi_mil.pipeline.train",
    "predict_slides": "wsi_mil.pipeline.predict",
    "heatmap_slides": "wsi_mil.pipeline.heatmap",
    "explain_slides": "wsi_mil.pipeline.explain",
    "segment_train": "wsi_mil.pipeline.segment",
    "segment_slides": "wsi_mil.pipeline.segment",
    "evaluate_predictions": "wsi_mil.pipeline.evaluate",
    # everything from one config
    "PipelineConfig": "wsi_mil.config.pipeline",
    "load_config": "wsi_mil.config.pipeline",
    "run_pipeline": "wsi_mil.pipeline.run",
    # files, models and encoders
    "read_prediction": "wsi_mil.mil.predictions",
    "create_model": "wsi_mil.mil.models",
    "list_models": "wsi_mil.mil.models",
    "create_encoder": "features.registry",
    "list_encoders": "features.registry",
}

#: literal, so that tools see it; tests/wsi_mil/test_init.py checks it against _API
__all__ = [
    "CohortParams",
    "ExecutorParams",
    "ExplainParams",
    "ExtractParams",
    "HeatmapParams",
    "InputError",
    "MissingInputError",
    "PipelineConfig",
    "PredictParams",
    "Project",
    "SegmentParams",
    "SegmentTrainParams",
    "TilingParams",
    "TrainParams",
    "WsiMilError",
    "__version__",
    "create_encoder",
    "create_model",
    "evaluate_predictions",
    "explain_slides",
    "extract_slides",
    "generate_cohort",
    "heatmap_slides",
    "list_encoders",
    "list_models",
    "load_config",
    "predict_slides",
    "read_prediction",
    "run_pipeline",
    "segment_slides",
    "segment_train",
    "tile_slides",
    "train_run",
]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'wsi_mil' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
