"""Tile labels from lesion annotations: each tile's lesion area fraction, stored in its bag.

The segmentation head is trained (and scored) on ``tile_labels`` in a feature bag: the exact
share of each tile's area inside the annotated lesions (tumour minus exclusion,
:func:`tiling.annotations.tile_fractions`). A slide labelled normal has no lesion by definition
and gets all zeros; a tumour slide without an annotation file is left without tile labels
(unknown is not zero) and reported, so partially annotated cohorts stay honest.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.bag import add_tile_labels, read_bag_attrs, read_bag_coords
from tiling.annotations import find_annotation, read_annotations, tile_fractions
from tiling.params import AnnotationParams


def bag_lesion_fractions(
    bag_path: str | os.PathLike,
    annotation_path: str | os.PathLike,
    params: AnnotationParams | None = None,
) -> np.ndarray:
    """Lesion fraction of every tile of a bag (float32 ``[N]``), from an annotation file."""
    attrs = read_bag_attrs(bag_path)
    coords = read_bag_coords(bag_path)
    lesions = read_annotations(annotation_path, params or AnnotationParams()).lesions
    return tile_fractions(lesions, coords, float(attrs["tile_size_level0"]))


def label_bag(
    bag_path: str | os.PathLike,
    annotation_path: str | os.PathLike | None,
    params: AnnotationParams | None = None,
) -> np.ndarray:
    """Write ``tile_labels`` into a bag: lesion fractions, or zeros when ``annotation_path`` is
    None (a normal slide). Returns the labels written."""
    if annotation_path is None:
        labels = np.zeros(read_bag_attrs(bag_path)["num_tiles"], dtype=np.float32)
        source = "normal slide: no lesion"
    else:
        labels = bag_lesion_fractions(bag_path, annotation_path, params)
        source = f"lesion area fraction from {annotation_path}"
    add_tile_labels(bag_path, labels, source)
    return labels


@dataclass
class LabelResult:
    """What :func:`label_bags` did."""

    labelled: list[str] = field(default_factory=list)  # from an annotation
    normal: list[str] = field(default_factory=list)  # all zeros
    unlabelled: list[str] = field(default_factory=list)  # lesion slide without annotation


def label_bags(
    features_dir: str | os.PathLike,
    annotations_dir: str | os.PathLike,
    slide_labels: Mapping[str, str],
    normal_label: str = "normal",
    params: AnnotationParams | None = None,
) -> LabelResult:
    """Label every bag of ``features_dir`` whose slide is in ``slide_labels``.

    The annotation of slide ``s`` is ``annotations_dir/s.{xml,geojson,json}``
    (case-insensitive); a slide whose label is ``normal_label`` gets zeros.
    """
    result = LabelResult()
    for bag in sorted(Path(features_dir).glob("*.h5")):
        slide_id = bag.stem
        if slide_id not in slide_labels:
            continue
        annotation = find_annotation(annotations_dir, slide_id)
        if annotation is not None:
            label_bag(bag, annotation, params)
            result.labelled.append(slide_id)
        elif slide_labels[slide_id] == normal_label:
            label_bag(bag, None, params)
            result.normal.append(slide_id)
        else:
            result.unlabelled.append(slide_id)
    if result.unlabelled:
        warnings.warn(
            f"{annotations_dir}: no annotation for {len(result.unlabelled)} slide(s) "
            f"not labelled {normal_label!r}, left without tile labels: "
            f"{', '.join(result.unlabelled)}",
            stacklevel=2,
        )
    return result
