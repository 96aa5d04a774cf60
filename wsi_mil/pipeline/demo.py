"""The embedded demo: the whole pipeline on a cohort the package generates, with no download.

``wsi-mil demo`` is ``wsi-mil run`` of the config below (shipped verbatim as
``configs/demo.yaml``): generate a Camelyon-shaped synthetic cohort (normal and tumour slides,
ASAP XML lesion outlines, an official-style train/test split), tile it, extract features with
the bundled ImageNet EfficientNet-Lite0, train gated attention-MIL with its tile-level
segmentation head on the slide labels only, predict the held-out test slides, render heatmaps
and exports, and score the predictions against the planted lesions. The lesion annotations are
never shown to training: the tile-level Dice and the pointing game measure what the model
learnt from slide labels alone.

``--quick`` is the same config on a smaller cohort with shorter training (CI runs it).
``--segment`` adds the pixel segmenter (:data:`SEGMENT_OVERRIDES`): a MONAI Attention U-Net
trained on the training slides' planted lesions segments the tiles the model flags, and
``segment/<slide_id>/outline.png`` shows its outline beside the tile head's.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from wsi_mil.config.pipeline import PipelineConfig

#: The demo's config, verbatim in ``configs/demo.yaml`` (a test keeps the two identical).
DEMO_CONFIG = """\
# wsi-mil demo: the whole pipeline on a synthetic Camelyon-shaped cohort, no download.
# Run it with `wsi-mil demo` (or `wsi-mil run configs/demo.yaml`); keys not set here keep the
# defaults documented in configs/default.yaml.

# Everything is written under this folder (`wsi-mil demo --out DIR` changes it).
out: demo_out
# The training run is OUT/runs/demo/.
name: demo

# Generate the cohort into OUT/cohort: slides/<id>.tif (pyramidal TIFF, 0.5 µm/px),
# annotations/<id>.xml (ASAP XML lesions) and labels.csv (slide_id,label,split).
cohort:
  # 8 normal + 8 tumour training slides, 4 + 4 held-out test slides: 24 slides.
  train_normal: 8
  train_tumor: 8
  test_normal: 4
  test_tumor: 4
  # 3072 x 2460-3072 px at 0.5 µm/px: slides of about 1.5 x 1.4 mm. The main lesion spans
  # 20-45 % of the side (0.3-0.7 mm, several 128 µm tiles); smaller ones may come with it.
  size_px: 3072
  mpp: 0.5
  seed: 0
  workers: 2

# 128 µm tiles (128 px at 1 µm/px, read from the 2x pyramid level): the same tissue per tile
# as the usual 256 px at 0.5 µm/px, at a quarter of the reading cost.
tiling:
  target_mpp: 1.0
  tile_size: 128

# The bundled ImageNet EfficientNet-Lite0 (1280-d features); nothing to download. Tile
# readers and device are chosen for the machine (one reader on a CPU, more on a GPU).
extract:
  encoder: efficientnet_lite0
  batch_size: 32

# Gated attention-MIL with the tile-level segmentation head, trained on slide labels only.
# The labels CSV has a split column, so training uses the train slides (a validation share
# carved from them) and the test slides are held out.
train:
  model: gated_abmil
  hidden_dims: [128]
  attention_dim: 64
  epochs: 30
  patience: 6
  lr: 0.0005
  bootstrap: 200

# Predict, render and score only the held-out test slides.
predict:
  split: test

heatmap:
  max_side: 1024
  topk: 6
  score: attention
  formats: [png, zarr, geojson]

# Lesion metrics use the cohort's annotations (OUT/cohort/annotations).
evaluate:
  bootstrap: 1000
"""

#: What ``--quick`` changes: a smaller cohort and shorter training (still held-out test slides).
QUICK_OVERRIDES: dict[str, Any] = {
    "cohort": {
        "train_normal": 5,
        "train_tumor": 5,
        "test_normal": 4,
        "test_tumor": 4,
        "size_px": 2048,
    },
    "train": {"epochs": 20, "patience": 5},
    "heatmap": {"max_side": 512, "topk": 4, "formats": ["png", "geojson"]},
    "evaluate": {"bootstrap": 200},
}


#: What ``--segment`` adds: a small Attention U-Net at 2 µm/px (64-px windows, 128 µm, the
#: demo's tile size) trained on the training slides' lesions, run on the tiles the
#: segmentation head or the attention flags.
SEGMENT_OVERRIDES: dict[str, Any] = {
    "segment": {
        "attention_threshold": 0.5,
        "train": {
            "net": "attention_unet",
            "mpp": 2.0,
            "tile_size": 64,
            "channels": [8, 16, 32],
            "tiles_per_slide": 48,
            "epochs": 15,
            "lr": 0.003,
        },
    },
}


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied, section by section."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def demo_config(
    out: str | os.PathLike | None = None, quick: bool = False, segment: bool = False
) -> PipelineConfig:
    """The demo's validated :class:`~wsi_mil.config.pipeline.PipelineConfig`."""
    from wsi_mil.config.pipeline import parse_config

    data = yaml.safe_load(DEMO_CONFIG)
    if quick:
        data = _merge(data, QUICK_OVERRIDES)
    if segment:
        data = _merge(data, SEGMENT_OVERRIDES)
    if out is not None:
        data["out"] = str(out)
    return parse_config(
        data, source="wsi_mil.pipeline.demo.DEMO_CONFIG" + (" (quick)" if quick else "")
    )


@dataclass(frozen=True)
class DemoResult:
    """The run's outcome and the four numbers the demo prints."""

    out: Path
    exit_code: int
    slide_auc: float | None
    accuracy: float | None
    tile_dice: float | None
    pointing_game: float | None
    n_test_slides: int
    n_lesion_slides: int
    seconds: dict[str, float]
    #: with ``--segment``: pixel Dice of the segmenter's masks and of the tile head on the
    #: same pixels (tumour slides)
    pixel_dice: float | None = None
    tile_pixel_dice: float | None = None


def run_demo(
    out: str | os.PathLike | None = None,
    quick: bool = False,
    overwrite: bool = False,
    segment: bool = False,
) -> DemoResult:
    """Run the demo pipeline (resuming a previous demo in ``out``) and collect its numbers.

    The numbers are read back from the files the run wrote (``evaluation/metrics.json`` and
    ``evaluation/lesion_metrics.json``), so what the demo prints is what is on disk.
    """
    from wsi_mil.pipeline.run import run_pipeline

    config = demo_config(out, quick, segment)
    result = run_pipeline(config, overwrite=overwrite)
    metrics = json.loads((config.evaluation_dir / "metrics.json").read_text(encoding="utf-8"))
    lesion = json.loads((config.evaluation_dir / "lesion_metrics.json").read_text(encoding="utf-8"))
    return DemoResult(
        out=config.out,
        exit_code=result.exit_code,
        slide_auc=metrics.get("auc"),
        accuracy=metrics.get("accuracy"),
        tile_dice=lesion["segmentation"]["dice"],
        pointing_game=lesion["explain"]["pointing_game"],
        n_test_slides=int(metrics["n_slides"]),
        n_lesion_slides=int(lesion["n_tumour_annotated"]),
        seconds={r.stage: r.seconds for r in result.stages},
        pixel_dice=((lesion.get("pixel_segmentation") or {}).get("mask") or {}).get("dice"),
        tile_pixel_dice=((lesion.get("pixel_segmentation") or {}).get("tile_head") or {}).get(
            "dice"
        ),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def results_table(result: DemoResult) -> str:
    """The four headline numbers, each with what it measures."""
    rows = [
        (
            "slide AUC",
            _fmt(result.slide_auc),
            f"tumour vs normal, {result.n_test_slides} held-out slides",
        ),
        ("accuracy", _fmt(result.accuracy), "at the threshold chosen on validation slides"),
        (
            "tile-level Dice",
            _fmt(result.tile_dice),
            f"segmentation head vs planted lesions, {result.n_lesion_slides} tumour slides",
        ),
        (
            "pointing game",
            _fmt(result.pointing_game),
            "share of tumour slides whose most attended tile is in a lesion",
        ),
    ]
    if result.pixel_dice is not None:
        rows += [
            (
                "pixel Dice",
                _fmt(result.pixel_dice),
                "pixel segmenter (flagged tiles) vs planted lesions",
            ),
            (
                "tile head pixel Dice",
                _fmt(result.tile_pixel_dice),
                "the tile head's squares on the same pixels",
            ),
        ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {value:>5}   {what}" for name, value, what in rows)


def _most_positive_slide(predictions_csv: Path) -> str | None:
    """The predicted slide with the highest probability of the last class (tumour)."""
    import csv

    if not predictions_csv.is_file():
        return None
    with predictions_csv.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        last = [c for c in (reader.fieldnames or []) if c.startswith("prob_")][-1:]
        rows = list(reader)
    if not rows or not last:
        return None
    return max(rows, key=lambda row: float(row[last[0]]))["slide_id"]


def output_locations(out: Path) -> list[tuple[str, Path]]:
    """Where each kind of output of the demo is, for the closing message (the example
    heatmap is the slide the model finds most tumour-like)."""
    config = demo_config(out)
    project = config.project
    example = project.heatmaps_dir / (_most_positive_slide(project.predictions_csv) or "<slide_id>")
    return [
        ("synthetic slides, lesion XML, labels", config.cohort_dir),
        ("tiles, tissue GeoJSON, previews", config.tiles_dir),
        ("feature bags", config.features_dir),
        (f"trained model (runs/{config.name})", config.run_dir),
        ("predictions", project.predictions_csv),
        ("heatmap overlay (most tumour-like slide)", example / "overlay.png"),
        ("QuPath export (same slide)", example / "tiles.geojson"),
        ("metrics, ROC, lesion scores", config.evaluation_dir),
        *(
            [
                (
                    "pixel vs tile outline (same slide)",
                    config.segment_dir / example.name / "outline.png",
                )
            ]
            if config.segment_dir.is_dir()
            else []
        ),
        ("resolved config", project.config_file),
    ]
