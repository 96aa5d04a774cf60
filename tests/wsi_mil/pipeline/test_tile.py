"""The tiling batch: a line per slide, and a slide that ends with no tile fails at ``tile``."""

from __future__ import annotations

import csv

import numpy as np

from tiling.pipeline import tiling_outputs
from wsi_mil.cli import main
from wsi_mil.synthetic.pyramid_tiff import Rect, shapes_render, write_pyramidal_tiff


def test_empty_slide_fails_at_tile_with_the_remedy(tmp_path, capsys):
    slides = tmp_path / "slides"
    slides.mkdir()
    write_pyramidal_tiff(
        slides / "tissue.tif", 1024, 1024, 0.5, shapes_render([Rect(0, 0, 768, 1024)])
    )
    write_pyramidal_tiff(
        slides / "empty.tif", 1024, 1024, 0.5, lambda x, y, w, h: np.full((h, w, 3), 243, np.uint8)
    )
    out = tmp_path / "out"
    assert main(["tile", str(slides), "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert "tissue: tissue 0.197 mm² (75% of the slide), 12 of 16 tiles kept" in printed.out
    assert "1 done" in printed.out and "1 failed" in printed.out
    with open(out / "failures.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["slide"].endswith("empty.tif") and row["stage"] == "tile"
    assert "0 tiles kept" in row["error"] and "--saturation-threshold" in row["error"]
    assert "empty.preview.png" in row["error"]  # the picture to look at
    assert not tiling_outputs(out, "empty").complete()  # a rerun tries it again
