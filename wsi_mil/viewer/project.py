"""The viewer's index of a project: which slides exist and where each one's files are.

Everything the server reads is found here, once, when it starts: a request names a slide id
and a layer name, never a path, and the id is looked up in this index. Files of the project
(predictions, heatmaps, tissue outlines, explanations) are used only when they resolve inside
one of the folders the viewer was started on, so a symlink pointing out of the project is
treated as absent. The slides and annotation files themselves are inputs that usually live
elsewhere; they come from ``--slides`` / ``--annotations`` or from the paths recorded in the
predictions, never from a request.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_mil.errors import WsiMilError
from wsi_mil.project import Project


class ProjectError(WsiMilError, ValueError):
    """A project folder (or explicit folder) the viewer cannot use; the message says why."""


@dataclass
class SlideEntry:
    """What the index knows about one slide; paths are None when absent or not allowed."""

    slide_id: str
    slide_path: Path | None = None
    prediction_path: Path | None = None
    heatmap_dir: Path | None = None
    zarr_path: Path | None = None
    segmentation_path: Path | None = None
    tissue_path: Path | None = None
    annotation_path: Path | None = None
    explanations_path: Path | None = None
    #: the pixel segmenter's folder (``segment/<slide_id>/``: mask.zarr, explain.zarr)
    segment_dir: Path | None = None
    #: the explain stage's ranking of the methods (``trust.json`` beside the slides' folders)
    trust_path: Path | None = None
    label: str = ""
    predicted_label: str = ""
    probs: dict[str, float] = field(default_factory=dict)
    #: problems found while indexing (shown in the page, the rest of the cohort still works)
    problems: list[str] = field(default_factory=list)
    task: str = "classification"  # the run's (its predictions record it)

    def summary(self) -> dict[str, Any]:
        """The slide's row in the page's list: the predicted class's probability, the most
        probable target's (multilabel), the risk (survival) or the value (regression), under
        ``score_name``."""
        if self.task in ("survival", "regression"):
            name, probability = next(iter(self.probs.items()), ("", None))
        elif self.task == "multilabel":
            name, probability = "P max", max(self.probs.values(), default=None)
        else:
            name, probability = "P", self.probs.get(self.predicted_label)
        return {
            "slide_id": self.slide_id,
            "label": self.label,
            "predicted_label": self.predicted_label,
            "probability": None if probability is None else round(float(probability), 4),
            "score_name": name,
            "task": self.task,
            # a label and a prediction of the same kind, so a mismatch is an error
            "comparable": self.task in ("classification", "multilabel"),
            "probs": self.probs,
            "problems": list(self.problems),
        }


def _inside(path: Path, roots: list[Path]) -> bool:
    try:
        real = path.resolve(strict=True)
    except OSError:
        return False
    return any(real == root or root in real.parents for root in roots)


@dataclass
class ProjectIndex:
    """The slides of one project, by id, and the folder ratings are written to."""

    root: Path
    slides: dict[str, SlideEntry]
    ratings_dir: Path
    heatmap_settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        project: str | os.PathLike | None = None,
        *,
        predictions: str | os.PathLike | None = None,
        heatmaps: str | os.PathLike | None = None,
        slides: str | os.PathLike | None = None,
        tiles: str | os.PathLike | None = None,
        annotations: str | os.PathLike | None = None,
        segment: str | os.PathLike | None = None,
    ) -> ProjectIndex:
        """Index a project folder (``wsi-mil run``'s output), or the explicit folders given.

        Without ``project`` the project root is the folder above ``predictions``; ``segment``:
        the ``segment/`` folder of ``wsi-mil segment`` (default: the project's).
        """
        if project is not None:
            root = Path(project)
        elif predictions is not None:
            root = Path(predictions).parent
        else:
            raise ProjectError("give a project folder (the --out of wsi-mil run) or --predictions")
        if not root.is_dir():
            raise ProjectError(f"{root}: project folder not found")
        folders = Project(
            root, predictions=predictions, heatmaps=heatmaps, tiles=tiles, segment=segment
        )
        pred_dir, heat_dir = folders.predictions_dir, folders.heatmaps_dir
        tiles_dir, segment_root = folders.tiles_dir, folders.segment_dir
        for name, given in (  # a folder the user names must be there
            ("--segment", segment),
            ("--predictions", predictions),
            ("--heatmaps", heatmaps),
            ("--slides", slides),
            ("--tiles", tiles),
            ("--annotations", annotations),
        ):
            if given is not None and not Path(given).is_dir():
                raise ProjectError(f"{Path(given)}: {name} folder not found")
        roots = [
            p.resolve() for p in (root, pred_dir, heat_dir, tiles_dir, segment_root) if p.is_dir()
        ]
        ann_dir = Path(annotations) if annotations is not None else _default_annotations(root)

        by_id = _slides_by_id(slides)
        ids = (
            sorted({p.stem for p in pred_dir.glob("*.h5")} | set(by_id))
            if pred_dir.is_dir()
            else sorted(by_id)
        )
        if not ids:
            raise ProjectError(
                f"{root}: no slides to show (no {pred_dir}/<slide_id>.h5 "
                f"predictions{' and no slides in ' + str(slides) if slides else ''})"
            )
        table = _predictions_table(Project(root).predictions_csv, roots)
        entries = {}
        for slide_id in ids:
            entry = SlideEntry(slide_id)

            def allowed(path: Path, what: str, entry: SlideEntry = entry) -> Path | None:
                if not (path.exists() or path.is_symlink()):
                    return None
                if _inside(path, roots):
                    return path
                entry.problems.append(f"{what} {path.name} points outside the project: ignored")
                return None

            entry.prediction_path = allowed(pred_dir / f"{slide_id}.h5", "predictions")
            folder = allowed(heat_dir / slide_id, "heatmap folder")
            if folder is not None and folder.is_dir():
                entry.heatmap_dir = folder
                entry.zarr_path = allowed(folder / "heatmap.zarr", "heatmap.zarr")
                entry.segmentation_path = allowed(
                    folder / "segmentation.geojson", "segmentation.geojson"
                )
            entry.tissue_path = allowed(tiles_dir / f"{slide_id}.tissue.geojson", "tissue outline")
            for candidate in (
                folders.explanations_dir / slide_id / "explanations.h5",
                heat_dir / slide_id / "explanations.h5",
            ):
                if entry.explanations_path is None:
                    entry.explanations_path = allowed(candidate, "explanations.h5")
                    if entry.explanations_path is not None:
                        entry.trust_path = allowed(
                            candidate.parent.parent / "trust.json", "trust.json"
                        )
            seg = allowed(segment_root / slide_id, "segment folder")
            entry.segment_dir = seg if seg is not None and seg.is_dir() else None
            attrs = _prediction_attrs(entry.prediction_path, entry, pred_dir.is_dir())
            entry.slide_path = by_id.get(slide_id)
            if entry.slide_path is None and attrs.get("slide_path"):
                entry.slide_path = Path(str(attrs["slide_path"]))
            if entry.slide_path is None:
                entry.problems.append("no slide file known (give --slides)")
            if ann_dir is not None:
                from tiling.annotations import find_annotation

                entry.annotation_path = find_annotation(ann_dir, slide_id)
            row = table.get(slide_id, {})
            entry.label = row.get("label", "")
            entry.predicted_label = row.get("predicted_label") or str(
                attrs.get("predicted_label", "")
            )
            entry.probs = {
                k.removeprefix("prob_"): float(v)
                for k, v in row.items()
                if k.startswith("prob_") and v not in ("", None)
            }
            entry.task = str(attrs.get("task", "classification"))
            if entry.task in ("survival", "regression"):  # one output: risk or value
                entry.probs = {}
            if not entry.probs and "probs" in attrs:
                entry.probs = {
                    str(c): float(p)
                    for c, p in zip(attrs["class_names"], np.atleast_1d(attrs["probs"]))
                }
            entries[slide_id] = entry
        return cls(
            root=root,
            slides=entries,
            ratings_dir=folders.ratings_dir,
            heatmap_settings=_heatmap_settings(entries),
        )


def _slides_by_id(slides_dir: str | os.PathLike | None) -> dict[str, Path]:
    if slides_dir is None:
        return {}
    from tiling.discover import find_slides, slide_id_for

    return {slide_id_for(p): p for p in find_slides([slides_dir], recursive=True)}


def _default_annotations(root: Path) -> Path | None:
    """The lesion annotations a run used (``evaluate.annotations_dir`` of its config.yaml),
    else the demo cohort's ``cohort/annotations``."""
    config = Project(root).config_file
    if config.is_file():
        import yaml

        try:
            data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            data = {}
        folder = (
            (data.get("evaluate") or {}).get("annotations_dir") if isinstance(data, dict) else None
        )
        if folder and Path(folder).is_dir():
            return Path(folder)
    demo = Project(root).cohort_dir / "annotations"
    return demo if demo.is_dir() else None


def _predictions_table(path: Path, roots: list[Path]) -> dict[str, dict[str, str]]:
    if not path.is_file() or not _inside(path, roots):
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["slide_id"]: row for row in csv.DictReader(f) if row.get("slide_id")}


def _prediction_attrs(path: Path | None, entry: SlideEntry, expected: bool) -> dict[str, Any]:
    """The predictions' attributes; a missing file is a problem only in a project that has
    predictions (a folder of slides alone is simply viewed without heat)."""
    if path is None:
        if expected:
            entry.problems.append("no predictions: the slide is shown without heat layers")
        return {}
    from wsi_mil.mil.predictions import PredictionFileError, read_prediction_attrs

    try:
        return read_prediction_attrs(path)
    except PredictionFileError as exc:
        entry.problems.append(f"predictions {path.name} unreadable ({exc})")
        entry.prediction_path = None
        return {}


def _heatmap_settings(entries: dict[str, SlideEntry]) -> dict[str, Any]:
    """The parameters the project's PNGs were made with (its first heatmap.json), so the
    viewer's colours and normalisation match them."""
    import json

    for entry in entries.values():
        if entry.heatmap_dir is not None and (entry.heatmap_dir / "heatmap.json").is_file():
            try:
                data = json.loads((entry.heatmap_dir / "heatmap.json").read_text("utf-8"))
            except (OSError, ValueError):
                continue
            return dict(data.get("params") or {})
    return {}
