"""Region–label report on a slide whose regions and attention are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, box

from tiling.annotations import EXCLUSION, TUMOR, SlideAnnotations
from wsi_mil.metrics.regions import (
    region_report,
    rows_to_csv,
    summarise_regions,
)

# a row of 4 tiles of 100 px: tumour covers tiles 0-1 and half of 2, with tile 1 excluded;
# one "Necrosis" point on tile 3
COORDS = np.array([[0, 0], [100, 0], [200, 0], [300, 0]])
ANNOTATIONS = SlideAnnotations(
    path=Path("slide.geojson"),
    regions={
        TUMOR: MultiPolygon([box(0, 0, 250, 100)]),
        EXCLUSION: MultiPolygon([box(100, 0, 200, 100)]),
    },
    points={"Necrosis": np.array([[350.0, 50.0]])},
)


def report(attention: list[float], tumor_prob: list[float]) -> list:
    return region_report(
        ANNOTATIONS, "s1", COORDS, np.array(attention), np.array(tumor_prob), 100.0
    )


def test_region_report_by_hand() -> None:
    rows = {r.region: r for r in report([1.0, 0.0, 0.6, 0.2], [0.9, 0.1, 0.4, 0.0])}
    tumor = rows[TUMOR]
    # tumour minus exclusion: tile 0 (weight 1) and half of tile 2 (weight 0.5)
    assert tumor.n_tiles == 2 and tumor.area_tiles == pytest.approx(1.5)
    assert tumor.mean_attention == pytest.approx((1.0 + 0.5 * 0.6) / 1.5)
    assert tumor.max_attention == pytest.approx(1.0)
    assert tumor.marked_attention == pytest.approx(1.0)  # both >= 0.5
    assert tumor.marked_segmentation == pytest.approx(1 / 1.5)  # only tile 0 >= 0.5
    assert rows[EXCLUSION].mean_attention == pytest.approx(0.0)
    necrosis = rows["Necrosis"]
    assert necrosis.kind == "points" and necrosis.max_attention == pytest.approx(0.2)
    background = rows["background"]
    # outside every region: half of tile 2 and all of tile 3
    assert background.area_tiles == pytest.approx(1.5)
    assert background.mean_attention == pytest.approx((0.5 * 0.6 + 0.2) / 1.5)


def test_perfect_and_inverted_attention() -> None:
    perfect = {r.region: r for r in report([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0])}
    inverted = {r.region: r for r in report([0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0])}
    assert perfect[TUMOR].marked_attention == 1.0 and inverted[TUMOR].marked_attention == 0.0
    assert perfect[EXCLUSION].marked_segmentation == 0.0
    assert inverted[EXCLUSION].marked_segmentation == 1.0


def test_csv_and_summary(tmp_path: Path) -> None:
    rows = report([1.0, 0.0, 0.6, 0.2], [0.9, 0.1, 0.4, 0.0])
    text = rows_to_csv(rows)
    assert text.splitlines()[0].startswith("slide_id,region,kind")
    assert len(text.splitlines()) == 1 + len(rows)
    summary = summarise_regions(rows)
    assert summary[TUMOR]["slides"] == 1 and not math.isnan(summary[TUMOR]["mean_attention"])
