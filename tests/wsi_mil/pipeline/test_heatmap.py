"""One slide's folder of heatmaps and exports, written whole and atomically."""

from __future__ import annotations

import json

import pytest

from tiling.tissue_geojson import write_tissue_geojson
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.pipeline.heatmap import expected_files, heatmap_slide, is_complete


@pytest.fixture
def inputs(tmp_path, lesion, lesion_slide):
    from shapely.geometry import MultiPolygon

    predictions = tmp_path / "predictions"
    predictions.mkdir()
    tiles = tmp_path / "tiles"
    write_tissue_geojson(tiles / "lesion.tissue.geojson", MultiPolygon([lesion.tissue]), "lesion")
    return lesion.write_predictions(predictions, lesion_slide), tiles


def test_every_format_lands_in_the_slide_folder(tmp_path, inputs):
    prediction_path, tiles = inputs
    params = HeatmapParams(max_side=512, topk=2)
    folder = heatmap_slide(prediction_path, tmp_path / "out" / "lesion", params, tiles_dir=tiles)
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected_files(params))
    assert is_complete(folder, params)
    summary = json.loads((folder / "heatmap.json").read_text())
    assert summary["tissue"].endswith("lesion.tissue.geojson")
    assert summary["params"]["max_side"] == 512 and summary["tiles"] > 0
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_formats_subset_needs_no_slide(tmp_path, inputs):
    prediction_path, _ = inputs
    params = HeatmapParams(formats=("geojson",))
    folder = heatmap_slide(
        prediction_path, tmp_path / "out" / "lesion", params, slide_path=tmp_path / "missing.svs"
    )
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["heatmap.json", "tiles.geojson", "segmentation.geojson"]
    )
    assert not is_complete(folder, HeatmapParams())  # asking for more later redoes the slide


def test_wrong_slide_is_refused_and_nothing_is_left(tmp_path, inputs, shared_slide):
    prediction_path, _ = inputs
    with pytest.raises(ValueError, match="wrong --slides"):
        heatmap_slide(
            prediction_path,
            tmp_path / "out" / "lesion",
            HeatmapParams(),
            slide_path=shared_slide("CMU-1-Small-Region.svs"),
        )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_real_slide_tiled_by_the_pipeline(tmp_path, shared_slide):
    """CMU-1-Small-Region through the tiling pipeline, with scores invented from tile darkness."""
    import cv2
    import numpy as np
    import zarr

    from tiling.params import TilingParams
    from tiling.pipeline import tile_slide
    from tiling.reader import TileReader
    from tiling.slide import open_slide
    from tiling.tiles_file import read_tiles_file
    from wsi_mil.mil.predictions import SlidePrediction, normalise_attention, write_prediction

    slide_path = shared_slide("CMU-1-Small-Region.svs")
    tiles = read_tiles_file(tile_slide(slide_path, tmp_path / "tiles", TilingParams(tile_size=128)))
    slide = open_slide(slide_path)
    reader = TileReader(slide, tiles.attrs)
    darkness = np.array([255.0 - reader.read(x, y).mean() for x, y in tiles.coords])
    slide.close()
    attention = ((darkness - darkness.mean()) / darkness.std()).astype(np.float32)
    p = 1 / (1 + np.exp(-3 * (attention - 1)))
    prediction = SlidePrediction(
        slide_id=tiles.slide_id,
        coords=tiles.coords,
        attention=attention,
        attention_norm=normalise_attention(attention),
        tile_probs=np.stack([1 - p, p], 1).astype(np.float32),
        probs=np.array([0.3, 0.7]),
        class_names=["normal", "tumor"],
        predicted_label="tumor",
        attrs={**tiles.attrs, "tiles_file": str(tiles.path)},
    )
    prediction_path = write_prediction(
        tmp_path / "predictions" / "CMU-1-Small-Region.h5", prediction
    )
    folder = heatmap_slide(
        prediction_path,
        tmp_path / "out" / "CMU-1-Small-Region",
        HeatmapParams(max_side=600, topk=2),
    )
    summary = json.loads((folder / "heatmap.json").read_text())
    assert summary["tissue"] is not None  # found beside the tiles file
    overlay = cv2.imread(str(folder / "overlay.png"))
    assert overlay.shape[1] == round(2220 * 600 / 2967)  # 2220 x 2967 slide, longest side 600
    features = json.loads((folder / "tiles.geojson").read_text())["features"]
    assert len(features) == len(tiles)
    stride = float(tiles.attrs["stride"])
    group = zarr.open_group(str(folder / "heatmap.zarr"), mode="r")
    assert group["0"].shape == (4, int(np.ceil(2967 / stride)), int(np.ceil(2220 / stride)))


def _explanations(folder, n_tiles, flagged):
    """A hand-written explanations.h5 with an lrp map and its trust figures."""
    import h5py
    import numpy as np

    path = folder / "lesion" / "explanations.h5"
    path.parent.mkdir(parents=True)
    scores = {
        "lrp": {
            "srg": 0.31,
            "morf_aupc": 0.42,
            "lerf_aupc": 0.73,
            "random_aupc": 0.6,
            "sanity_spearman": 0.7 if flagged else 0.08,
            "sanity_flagged": float(flagged),
        }
    }
    with h5py.File(path, "w") as f:
        f.create_dataset("lrp", data=np.linspace(-1, 1, n_tiles))
        f.attrs.update(
            methods=json.dumps(["lrp"]),
            scores=json.dumps(scores),
            fold=2,
            in_sample=False,
            complete=True,
        )
    (folder / "trust.json").write_text(json.dumps({"recommended": "lrp"}))


@pytest.mark.parametrize("flagged", [False, True])
def test_an_explanation_map_carries_its_trust_figures(tmp_path, inputs, flagged):
    from wsi_mil.mil.predictions import read_prediction

    prediction_path, tiles = inputs
    _explanations(tmp_path / "explain", len(read_prediction(prediction_path).coords), flagged)
    params = HeatmapParams(max_side=256, topk=0, score="lrp")
    folder = heatmap_slide(
        prediction_path,
        tmp_path / "out" / "lesion",
        params,
        tiles_dir=tiles,
        explanations_dir=tmp_path / "explain",
    )
    shown = json.loads((folder / "heatmap.json").read_text())["explanation"]
    assert shown["method"] == "lrp" and shown["fold"] == 2 and shown["recommended"] == "lrp"
    assert shown["figures"]["srg"] == pytest.approx(0.31)
    assert shown["fails_sanity"] is flagged
    caption = " ".join(shown["caption"])
    assert "LeRF \u2212 MoRF AUPC 0.31" in caption and "out of sample" in caption
    assert ("FAILS THE SANITY CHECK" in caption) is flagged
    assert (folder / "overlay.png").stat().st_size > 0


def test_the_predictions_attention_is_not_given_another_models_figures(tmp_path, inputs):
    from wsi_mil.mil.predictions import read_prediction
    from wsi_mil.pipeline.heatmap import explanation_trust

    prediction = read_prediction(inputs[0])
    scores = {"attention": {"srg": 0.2, "sanity_flagged": 0.0}}
    attrs = {"fold": 2, "scores": scores, "run_path": "elsewhere"}
    maps = {"attention": prediction.attention}
    assert explanation_trust("attention", maps, attrs, prediction, tmp_path) is None
    assert explanation_trust("lrp", maps, attrs, prediction, tmp_path) is None
