"""``segment`` on a Camelyon-sized slide holds tiles and chunks, never the slide or its mask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsi_mil.synthetic.pyramid_tiff import Ellipse, shapes_render, write_pyramidal_tiff

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from conftest import DarkPixels, dark_card
    from wsi_mil.mil.predictions import read_prediction
    from wsi_mil.segment.infer import segment_slide
    from wsi_mil.segment.params import SegmentParams
    from monai.data.utils import compute_importance_map
    prediction, out, run = sys.argv[1], sys.argv[2], sys.argv[3] == "run"
    # the fixed cost of any run: libraries, the predictions, one forward pass
    read_prediction(prediction)
    compute_importance_map((256, 256), mode="gaussian")
    DarkPixels()(torch.zeros(8, 3, 256, 256))
    if run:
        segment_slide(prediction, DarkPixels(), dark_card(1.0, 256), out,
                      SegmentParams(png_max_side=512, batch_size=8))
    print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


def _peak_mb(prediction: Path, out: Path, run: bool) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(prediction), str(out), "run" if run else "baseline"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_kb"] / 1024


def test_peak_memory_is_bounded_by_tiles_and_chunks(tmp_path, segment_helpers):
    grid_prediction = segment_helpers[2]
    # 16 x 12 mm at 0.5 µm/px (a Camelyon16 slide's tissue extent): 805 Mpx, 2.4 GB of RGB
    width, height, mpp = 32768, 24576, 0.5
    lesion = Ellipse(20000.0, 9000.0, 1400.0, 1000.0)
    slide = tmp_path / "large.tif"
    write_pyramidal_tiff(slide, width, height, mpp, shapes_render([lesion], texture=0))
    tile = 512

    def flagged(x, y):
        return (
            x < lesion.cx + lesion.rx
            and x + tile > lesion.cx - lesion.rx
            and y < lesion.cy + lesion.ry
            and y + tile > lesion.cy - lesion.ry
        )

    prediction = tmp_path / "large.h5"
    grid_prediction(prediction, slide, width, height, mpp, tile, flagged)
    baseline = _peak_mb(prediction, tmp_path / "baseline", run=False)
    peak = _peak_mb(prediction, tmp_path / "segment", run=True)

    summary = json.loads((tmp_path / "segment" / "segment.json").read_text())
    mask_rows, mask_cols = summary["mask_shape"]
    full_mask_mb = mask_rows * mask_cols / 2**20  # the whole mask as uint8 at 1 µm/px
    chunk, size = 512, 256
    # in flight: float32 sums + weights of the chunks under one row of windows (plus the
    # next), a batch of RGB windows and their probabilities, and the 512-px thumbnail
    # read from the nearest pyramid level (up to 2x larger per side, RGBA, and copies)
    chunks_mb = 2 * 4 * chunk * chunk * summary["peak_chunks_in_memory"] / 2**20
    windows_mb = 8 * size * size * (3 + 4 * 4) / 2**20
    thumbnail_mb = 6 * (2 * 512) ** 2 * 4 / 2**20
    # and a fixed allowance for what the libraries keep: OpenSlide's tile cache (32 MB by
    # default), JPEG and zarr codec buffers, the allocator's per-thread arenas
    libraries_mb = 96
    bound = baseline + chunks_mb + windows_mb + thumbnail_mb + libraries_mb
    sizes = {
        "peak": peak,
        "baseline": baseline,
        "bound": bound,
        "chunks": chunks_mb,
        "full_mask": full_mask_mb,
    }
    # the bound leaves no room for the whole mask even as uint8 (the slide is 12x larger)
    assert bound - baseline < full_mask_mb, sizes
    assert peak < bound, sizes
    assert summary["share_segmented"] < 0.05
