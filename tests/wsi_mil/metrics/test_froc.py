"""Camelyon16 FROC on constructed slides with known lesions and detections."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Point, box

from wsi_mil.metrics.froc import (
    Detections,
    evaluation_mask,
    froc,
    itc_labels,
    slide_hits,
    tile_detections,
)
from wsi_mil.metrics.params import FrocParams

# A 2.5 mm x 2.5 mm slide at 0.25 µm/px (10 000 px square) with three lesions:
MPP, SIZE = 0.25, 10_000
BIG = box(1000, 1000, 3000, 3000)  # 500 µm square: a lesion to find
ITC = Point(8000, 2000).buffer(200)  # 100 µm across: isolated tumour cells
LONG = box(6000, 6000, 7600, 7000)  # 400 x 250 µm: a lesion to find
LESIONS = MultiPolygon([BIG, ITC, LONG])


def detections(*items: tuple[float, float, float]) -> Detections:
    arr = np.array(items, dtype=float).reshape(-1, 3)
    return Detections(probs=arr[:, 0], x=arr[:, 1], y=arr[:, 2])


def hits(dets: Detections, lesions=LESIONS):
    return slide_hits(dets, SIZE, SIZE, MPP, lesions)


def test_evaluation_mask_grows_lesions_and_finds_itc() -> None:
    params = FrocParams()
    evaluation = evaluation_mask(LESIONS, SIZE, SIZE, MPP, params)
    assert evaluation.max() == 3
    itc = itc_labels(evaluation, params)
    assert len(itc) == 1
    itc_label = evaluation[int(2000 * MPP / params.mask_mpp), int(8000 * MPP / params.mask_mpp)]
    assert itc == {int(itc_label)}
    # grown by 37.5 µm per side: 500 µm square -> about 575 µm across
    rows = np.nonzero((evaluation == evaluation[64, 64]).any(axis=1))[0]
    assert (rows.max() - rows.min() + 1) * params.mask_mpp == pytest.approx(575, abs=2 * 7.8)


def test_hand_made_case() -> None:
    tumor = hits(
        detections(
            (0.9, 2000, 2000),  # in BIG
            (0.5, 1500, 1500),  # in BIG again: only the highest counts
            (0.8, 8000, 2000),  # in the ITC: neither found nor false positive
            (0.7, 5000, 9000),  # background: false positive
            (0.3, 9500, 500),  # background: false positive
        )
    )
    np.testing.assert_allclose(sorted(tumor.fp_probs), [0.3, 0.7])
    np.testing.assert_allclose(sorted(tumor.lesion_probs), [0.0, 0.9])  # LONG missed
    assert tumor.n_itc == 1
    normal = hits(detections((0.6, 100, 100), (0.2, 200, 200)), lesions=None)
    np.testing.assert_allclose(sorted(normal.fp_probs), [0.2, 0.6])
    result = froc([tumor, normal])
    # one of two lesions found at every threshold, 0 to 2 false positives per slide
    np.testing.assert_allclose(result.sensitivities, [0.5] * 6)
    assert result.score == pytest.approx(0.5)
    assert result.n_lesions == 2 and result.n_slides == 2 and result.n_itc == 1
    np.testing.assert_allclose(result.fps_per_slide, [0, 0, 0.5, 1, 1.5, 2])


def test_detection_within_the_grown_margin_counts() -> None:
    just_outside = hits(detections((0.9, 3000 + 100, 2000)))  # 25 µm right of BIG
    assert just_outside.fp_probs.size == 0 and just_outside.lesion_probs.max() == 0.9
    farther = hits(detections((0.9, 3000 + 400, 2000)))  # 100 µm right: outside
    assert farther.fp_probs.size == 1


def test_perfect_inverted_and_sensitivity_curve() -> None:
    perfect = froc(
        [hits(detections((0.95, 2000, 2000), (0.9, 6800, 6500))), hits(detections(), lesions=None)]
    )
    assert perfect.score == pytest.approx(1.0)
    inverted = froc(
        [
            hits(
                detections(
                    (0.1, 2000, 2000),
                    (0.05, 6800, 6500),
                    *[(0.9, 9000, 9000 - 10 * i) for i in range(10)],
                )
            ),
            hits(detections(*[(0.8, 500 + 10 * i, 500) for i in range(10)]), lesions=None),
        ]
    )
    # lesions only found once 10 false positives per slide are accepted: beyond 8
    assert inverted.score == pytest.approx(0.0)
    assert inverted.sensitivity.max() == 1.0


def test_random_detections_score_between() -> None:
    rng = np.random.default_rng(0)
    slides = []
    for _ in range(10):
        xy = rng.uniform(0, SIZE, (20, 2))
        slides.append(hits(Detections(rng.random(20), xy[:, 0], xy[:, 1])))
    result = froc(slides)
    assert 0.0 < result.score < 1.0
    assert np.all(np.diff(result.fps_per_slide) >= 0)


def test_froc_needs_a_lesion() -> None:
    with pytest.raises(ValueError, match="at least one lesion"):
        froc([hits(detections((0.5, 10, 10)), lesions=None)])


def test_tile_detections_are_local_maxima_one_per_plateau() -> None:
    # 4 x 4 grid of 100-px tiles; a peak at (0, 0), a plateau of two at (2..3, 3), one missing
    probs = np.array(
        [[0.9, 0.5, 0.1, 0.1], [0.4, 0.2, 0.1, 0.1], [0.1, 0.1, 0.3, 0.3], [0.1, 0.2, 0.7, 0.7]]
    )
    rows, cols = np.mgrid[0:4, 0:4]
    keep = ~((rows == 1) & (cols == 3))
    coords = np.column_stack([cols[keep] * 100, rows[keep] * 100])
    found = tile_detections(coords, probs[keep], 100.0, FrocParams(min_probability=0.5))
    assert sorted(found.probs.tolist()) == [0.7, 0.9]
    assert (50.0, 50.0) in list(zip(found.x.tolist(), found.y.tolist()))
    assert tile_detections(np.zeros((0, 2)), np.zeros(0), 100.0).probs.size == 0
