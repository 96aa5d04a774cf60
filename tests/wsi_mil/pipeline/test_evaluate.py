"""The evaluation figures say what they score."""

from __future__ import annotations

from wsi_mil.pipeline.evaluate import figure_provenance


def test_figures_say_whether_any_slide_was_seen_in_training():
    held_out = {"n_slides": 58, "unit": "slides", "in_sample_slides": []}
    assert figure_provenance(held_out) == "58 slides, out of sample"
    seen = {"n_slides": 10, "unit": "patients", "in_sample_slides": ["a", "b"]}
    assert figure_provenance(seen).startswith("10 patients, 2 slide(s) IN-SAMPLE")
