"""``segment --explain``: maps stitched on the mask's lattice, scored against the lesion, the
cohort table, resuming, and the maps as viewer layers (a tiny U-Net with random weights on a
slide with a painted disc)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from wsi_mil.cli import main
from wsi_mil.synthetic.pyramid_tiff import Ellipse, shapes_render, write_pyramidal_tiff

pytestmark = pytest.mark.slow

DISC = (400.0, 380.0, 170.0)  # centre x, y and radius in level-0 px (0.5 µm/px)


@pytest.fixture(scope="module")
def explained(tmp_path_factory, segment_helpers, random_segmenter):
    """CLI segment --explain gradcam integrated_gradients random, with annotations."""
    grid_prediction = segment_helpers[2]
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explain")
    slide = root / "slides" / "disc.tif"
    slide.parent.mkdir()
    cx, cy, r = DISC
    write_pyramidal_tiff(slide, 1280, 1024, 0.5, shapes_render([Ellipse(cx, cy, r, r)], texture=0))
    (root / "annotations").mkdir()
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ring = np.column_stack([cx + r * np.cos(angles), cy + r * np.sin(angles)]).tolist()
    (root / "annotations" / "disc.json").write_text(
        json.dumps({"positive": [{"name": "disc", "vertices": ring}], "negative": []})
    )
    (root / "predictions").mkdir()
    grid_prediction(
        root / "predictions" / "disc.h5",
        slide,
        1280,
        1024,
        0.5,
        256,
        lambda x, y: x < cx + r and x + 256 > cx - r and y < cy + r and y + 256 > cy - r,
    )
    random_segmenter(root / "model", "unet", lesion_bias=2.0)
    args = [
        "segment",
        "--predictions",
        str(root / "predictions"),
        "--model",
        str(root / "model"),
        "--out",
        str(root),
        "--annotations",
        str(root / "annotations"),
        "--margin",
        "0",
        "--explain",
        "gradcam",
        "integrated_gradients",
        "random",
        "--explain-ig-steps",
        "4",
        "--explain-score-windows",
        "2",
        "--explain-perturbation-steps",
        "4",
        "--explain-figure-windows",
        "1",
    ]
    assert main(args) == 0
    return root, args


def test_maps_are_stitched_on_the_masks_lattice(explained):
    root, _ = explained
    folder = root / "segment" / "disc"
    mask = zarr.open_group(str(folder / "mask.zarr"), mode="r")
    maps = zarr.open_group(str(folder / "explain.zarr"), mode="r")
    assert sorted(maps.group_keys()) == ["gradcam", "integrated_gradients", "random"]
    for name in maps.group_keys():
        assert maps[name]["0"].shape == mask["0"].shape
        assert (
            maps[name].attrs["wsi_mil"]["downsample_level0"]
            == mask.attrs["wsi_mil"]["downsample_level0"]
        )
    # where a window ran, random noise covers every pixel; far from the disc none ran
    noise = maps["random"]["0"][0]
    assert (noise[40:150, 40:150] > 0).mean() > 0.99 and noise[40:150, 40:150].std() > 20


def test_explain_json_scores_the_lesion_border_windows(explained):
    root, _ = explained
    summary = json.loads((root / "segment" / "disc" / "explain.json").read_text())
    segment = json.loads((root / "segment" / "disc" / "segment.json").read_text())
    assert summary["windows"] == segment["windows"] and summary["annotated"]
    assert summary["net"] == "unet" and summary["gradcam_layer"]
    assert set(summary["seconds_per_window"]) == {"gradcam", "integrated_gradients", "random"}
    low, high = segment["params"]["explain_lesion_share"]
    assert summary["scored_windows"] == len(summary["scored"]) > 0
    assert all(low <= w["lesion_share"] <= high for w in summary["scored"])
    costly = [w for w in summary["scored"] if w.get("costly")]
    assert len(costly) == summary["costly_windows"] == 2
    for window in costly:
        noise = window["scores"]["random"]
        assert noise["sanity_spearman"] == 1.0 and noise["sanity_flagged"] == 1.0
        assert 0 <= noise["deletion_auc"] <= 1 and 0 <= noise["insertion_random_auc"] <= 1
    assert summary["summary"]["prediction"]["windows"] > 0
    assert (root / "segment" / "disc" / "explain.png").stat().st_size > 10_000


def test_the_cohort_table_has_every_method_and_its_cost(explained):
    root, _ = explained
    table = (root / "segment" / "explain_table.md").read_text()
    for name in ("gradcam", "integrated_gradients", "random (flagged) |", "prediction |"):
        assert f"| unet | {name}" in table
    assert "ms per window" in table and (root / "segment" / "explain_scores.png").is_file()


def test_resume_skips_and_other_methods_redo(explained, capsys):
    root, args = explained
    assert main(args) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().out
    other = [a if a != "integrated_gradients" else "gradcam" for a in args]
    other.remove("gradcam")
    assert main(other + ["--explain-sanity"]) == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out
    summary = json.loads((root / "segment" / "disc" / "explain.json").read_text())
    assert summary["methods"] == ["gradcam", "random"]
    index = other.index("--annotations")  # the same methods unscored are other explanations
    assert main(other[:index] + other[index + 2 :] + ["--explain-sanity"]) == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out
    assert not json.loads((root / "segment" / "disc" / "explain.json").read_text())["annotated"]


def test_a_method_the_network_lacks_is_one_clear_error(explained, capsys):
    _, args = explained
    index = args.index("--explain")
    assert main(args[:index] + ["--explain", "attention_rollout"]) == 2
    err = capsys.readouterr().err
    assert "has none of the explanations" in err and "Traceback" not in err
    assert main(args[:index] + ["--explain", "attention_rollout", "random"]) == 0
    assert "has no attention_rollout (skipped)" in capsys.readouterr().out


def test_the_maps_are_viewer_layers(explained):
    from wsi_mil.viewer.project import ProjectIndex
    from wsi_mil.viewer.service import ViewerService

    root, _ = explained
    service = ViewerService(ProjectIndex.build(root))
    layers = {layer["id"]: layer for layer in service.slide_detail("disc")["layers"]}
    assert {"segment_mask", "segment_random"} <= set(layers)
    assert layers["segment_random"]["kind"] == "heat"
    at_disc = service.measure("disc", DISC[0], DISC[1])["layers"]
    assert 0 < at_disc["segment_random"] <= 1
    state = service.state("disc")
    level = state.deepzoom.level_count - 4  # 1/8: the whole slide in one Deep Zoom tile
    window = service.window(state, level, 0, 0)
    values = state.heat["segment_random"].sample(window, "nearest")
    assert values.shape == (1024 // 8, 1280 // 8)
    assert np.isfinite(values[40:55, 45:55]).all()  # the disc, where windows ran
    assert np.isnan(values[-4:, -4:]).all()  # the far corner, where none ran
    assert service.layer_tile("disc", "segment_random", level, 0, 0).startswith(b"\x89PNG")
