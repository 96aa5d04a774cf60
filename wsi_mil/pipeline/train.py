"""The training stage: feature bags and slide labels -> a run folder, ``PROJECT/runs/<name>/``.

The entry point beside the other stages (it takes its inputs, then writes into a project like
them); the training itself, fold by fold, is :func:`wsi_mil.mil.train.train_folds`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from wsi_mil.project import Project

if TYPE_CHECKING:
    from wsi_mil.mil.params import TrainParams


def train_run(
    features_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    name: str = "run",
    params: TrainParams | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train on the bags of ``features_dir`` with the labels of ``labels_csv`` into the project
    ``out``'s ``runs/<name>/``, and return the summary (also ``summary.json`` there).

    ``resume``: keep the complete folds of an interrupted run with the same settings
    (:func:`wsi_mil.mil.train.train_folds`).
    """
    from wsi_mil.mil.train import train_folds

    return train_folds(
        features_dir, labels_csv, Project.of(out).run_dir(name), params, resume=resume
    )
