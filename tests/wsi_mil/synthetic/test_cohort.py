"""The synthetic Camelyon-shaped cohort: deterministic, readable, and its masks match its XML."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tiling.annotations import lesion_mask, read_annotations
from tiling.slide import open_slide, slide_mpp
from wsi_mil.pipeline.cohort import generate_cohort
from wsi_mil.synthetic.cohort import design_slide, render_region
from wsi_mil.synthetic.params import CohortParams

SMALL = CohortParams(
    train_normal=1,
    train_tumor=1,
    test_normal=1,
    test_tumor=1,
    size_px=1024,
    main_lesion=(0.3, 0.4),
    main_lesion_min_um=0.0,
    extra_lesions=(0, 0),
    seed=3,
)


def test_rendering_is_deterministic_and_position_consistent() -> None:
    a = design_slide(42, True, SMALL)
    b = design_slide(42, True, SMALL)
    assert a.lesions.equals(b.lesions) and a.tissue.equals(b.tissue)
    big = render_region(a, 300, 300, 300, 200)
    np.testing.assert_array_equal(big, render_region(b, 300, 300, 300, 200))
    # the same pixels whichever region they are read through
    np.testing.assert_array_equal(big[50:150, 100:200], render_region(a, 400, 350, 100, 100))
    other = design_slide(43, True, SMALL)
    assert not other.lesions.equals(a.lesions)


def test_lesions_lie_in_tissue_with_the_requested_size() -> None:
    for seed in range(5):
        design = design_slide(seed, True, SMALL)
        assert not design.lesions.is_empty
        assert design.tissue.buffer(1e-6).contains(design.lesions)
        minx, miny, maxx, maxy = design.lesions.bounds
        assert max(maxx - minx, maxy - miny) <= 0.4 * min(design.width, design.height) + 1e-6
    assert design_slide(0, False, SMALL).lesions.is_empty
    # the main lesion is never shorter than main_lesion_min_um
    floor = CohortParams(size_px=2048, main_lesion_min_um=300.0, extra_lesions=(0, 0))
    minx, miny, maxx, maxy = design_slide(1, True, floor).lesions.bounds
    assert max(maxx - minx, maxy - miny) * floor.mpp >= 300.0 * 0.9  # at most clipped by tissue


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    return generate_cohort(tmp_path_factory.mktemp("cohort"), SMALL)


def test_cohort_files_labels_and_mpp(cohort) -> None:
    with cohort.labels_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [tuple(r.values()) for r in rows] == [
        (s.slide_id, s.label, s.split) for s in cohort.slides
    ]
    assert list(rows[0]) == ["slide_id", "label", "split"]
    assert {r["slide_id"] for r in rows} >= {"normal_001", "tumor_001"}
    assert sorted(r["label"] for r in rows if r["split"] == "test") == ["normal", "tumor"]
    for slide in cohort.slides:
        opened = open_slide(slide.path)
        try:
            assert opened.dimensions == (slide.width, slide.height)
            assert slide_mpp(opened, slide.path) == (pytest.approx(0.5), "metadata")
        finally:
            opened.close()
        assert (slide.annotation is not None) == (slide.label == "tumor")


def test_tumour_pixels_match_the_xml(cohort) -> None:
    """Where the XML says lesion, the slide shows dense dark nuclei; elsewhere it does not."""
    for slide in (s for s in cohort.slides if s.label == "tumor"):
        annotations = read_annotations(slide.annotation)
        opened = open_slide(slide.path)
        try:
            rgb = np.asarray(opened.read_region((0, 0), 0, opened.dimensions))[..., :3]
        finally:
            opened.close()
        # share of very dark (tumour-nucleus) pixels in 16 x 16 µm blocks (32 px at 0.5 µm/px)
        h, w = (slide.height // 32) * 32, (slide.width // 32) * 32
        dark = (rgb[:h, :w].mean(axis=2) < 105).reshape(h // 32, 32, w // 32, 32).mean((1, 3))
        truth = lesion_mask(annotations, w, h, slide.mpp, slide.mpp * 32)
        assert truth.sum() > 20
        # ignore the blocks on the lesion boundary
        inner = (
            truth
            & np.roll(truth, 1, 0)
            & np.roll(truth, -1, 0)
            & np.roll(truth, 1, 1)
            & np.roll(truth, -1, 1)
        )
        outer = ~(
            truth
            | np.roll(truth, 1, 0)
            | np.roll(truth, -1, 0)
            | np.roll(truth, 1, 1)
            | np.roll(truth, -1, 1)
        )
        predicted = dark > 0.2
        assert predicted[inner].mean() > 0.95
        assert predicted[outer].mean() < 0.05


def test_rerun_keeps_slides(cohort) -> None:
    before = {s.path: s.path.stat().st_mtime_ns for s in cohort.slides}
    again = generate_cohort(cohort.root, SMALL)
    assert {s.path: s.path.stat().st_mtime_ns for s in again.slides} == before


def test_real_outlines_are_used(shared_data: Path) -> None:
    params = CohortParams(
        size_px=2048, outlines=shared_data / "annotations" / "camelyon16_json", extra_lesions=(0, 0)
    )
    blob = design_slide(7, True, CohortParams(size_px=2048, extra_lesions=(0, 0)))
    real = design_slide(7, True, params)
    assert not real.lesions.is_empty and not real.lesions.equals(blob.lesions)
    assert real.tissue.buffer(1e-6).contains(real.lesions)
