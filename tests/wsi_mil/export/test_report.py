"""The region-label-text report of a slide: regions with areas in µm² and the model inside
them, and the text's classes against the model (``wsi-mil report``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from tiling.annotations import SlideAnnotations
from wsi_mil.cli import main
from wsi_mil.export.params import ReportParams
from wsi_mil.export.report import slide_report
from wsi_mil.export.report_text import DEFAULT_NEGATIONS, Vocabulary
from wsi_mil.mil.predictions import SlidePrediction, normalise_attention, write_prediction

VOCABULARY = Vocabulary(
    {"tumor": ("carcinoma", "metastatic carcinoma", "metastasis"), "normal": ("benign",)},
    DEFAULT_NEGATIONS,
)
TUMOUR_SQUARE = shapely.box(0, 0, 200, 200)  # the top-left 2 x 2 tiles
SEGMENTED = shapely.box(20, 20, 180, 180)


def prediction(slide_id: str, tumour: bool) -> SlidePrediction:
    """4 x 4 tiles of 100 px at 0.5 µm/px; on a tumour slide the top-left 2 x 2 are tumour
    (P 0.9) and hold the attention."""
    xs, ys = np.meshgrid(np.arange(0, 400, 100), np.arange(0, 400, 100))
    coords = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.int64)
    inside = tumour & (coords[:, 0] < 200) & (coords[:, 1] < 200)
    attention = np.where(inside, 2.0, 0.0).astype(np.float32) + np.arange(16) * 0.01
    p = np.where(inside, 0.9, 0.1).astype(np.float32)
    return SlidePrediction(
        slide_id=slide_id,
        coords=coords,
        attention=attention,
        attention_norm=normalise_attention(attention),
        tile_probs=np.column_stack([1 - p, p]),
        class_names=["normal", "tumor"],
        probs=np.array([0.1, 0.9] if tumour else [0.9, 0.1], np.float32),
        predicted_label="tumor" if tumour else "normal",
        attrs={
            "slide_width": 400,
            "slide_height": 400,
            "slide_mpp": 0.5,
            "tile_size_level0": 100.0,
            "stride": 100.0,
            "negative_class": "normal",
        },
    )


def test_regions_have_their_area_attention_and_coverage():
    annotations = SlideAnnotations(Path("s.xml"), regions={"tumor": TUMOUR_SQUARE})
    report = slide_report(
        prediction("s", True), annotations, SEGMENTED, None, None, ReportParams(), {}
    )
    rows = {(r["label"], r["source"]): r for r in report["regions"]}
    annotated = rows[("tumor", "annotation")]
    assert annotated["area_um2"] == pytest.approx(200 * 200 * 0.25)
    assert annotated["n_tiles"] == 4 and annotated["max_attention"] == pytest.approx(1.0)
    assert annotated["coverage_segmentation"] == pytest.approx(160**2 / 200**2)
    assert annotated["coverage_attention"] == pytest.approx(1.0)  # its 4 tiles are attended
    segmented = rows[("tumor", "segmenter")]
    assert segmented["area_um2"] == pytest.approx(160**2 * 0.25)
    assert rows[("normal", "tile head")]["area_um2"] == pytest.approx(12 * 100**2 * 0.25)
    background = rows[("background", "tissue outside annotations")]
    assert background["area_um2"] == pytest.approx((400**2 - 200**2) * 0.25)
    assert background["coverage_attention"] == 0.0
    # attention masses are shares of the pooling weights: the annotation and the rest add up
    assert annotated["attention_mass"] + background["attention_mass"] == pytest.approx(1.0)
    assert report["lesions"][0]["inside_annotation"] == pytest.approx(1.0)
    assert report["text"] is None


def test_a_report_naming_tumour_on_a_slide_the_model_found_normal_is_flagged_first():
    report = slide_report(
        prediction("n", False),
        None,
        None,
        "Benign lymph node. Metastatic carcinoma in one node.",
        VOCABULARY,
        ReportParams(),
        {},
    )
    alignment = report["text"]["alignment"]
    assert alignment[0]["label"] == "tumor" and alignment[0]["status"] == "unsupported"
    assert alignment[0]["segmented_area_um2"] == 0 and alignment[0]["attended_tiles"] == 0
    assert alignment[1]["label"] == "normal" and alignment[1]["status"] == "supported"


def test_negated_and_unmentioned_findings_are_told_apart():
    tumour = prediction("t", True)
    ruled_out = slide_report(
        tumour, None, SEGMENTED, "No evidence of carcinoma.", VOCABULARY, ReportParams(), {}
    )["text"]["alignment"]
    assert [(r["label"], r["status"]) for r in ruled_out] == [
        ("tumor", "ruled out in text, found by model")
    ]
    silent = slide_report(tumour, None, SEGMENTED, "Lymph node.", VOCABULARY, ReportParams(), {})[
        "text"
    ]["alignment"]
    assert [(r["label"], r["status"]) for r in silent] == [("tumor", "not mentioned")]
    found = slide_report(
        tumour, None, SEGMENTED, "Metastasis, 1.6 mm.", VOCABULARY, ReportParams(), {}
    )["text"]["alignment"][0]
    # the pooling weight of the 4 tumour tiles, times the share of each inside the lesion
    weights = np.exp(tumour.attention) / np.exp(tumour.attention).sum()
    expected = (weights[[0, 1, 4, 5]] * 160**2 / 100**2 / 4).sum()
    assert found["status"] == "supported"
    assert found["attention_mass"] == pytest.approx(expected)
    assert found["segmented_area_um2"] == pytest.approx(160**2 * 0.25)


def test_the_report_verb_writes_every_slide_and_the_index(tmp_path, capsys):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    write_prediction(predictions / "n.h5", prediction("n", False))
    write_prediction(predictions / "t.h5", prediction("t", True))
    (tmp_path / "segment" / "t").mkdir(parents=True)
    (tmp_path / "segment" / "t" / "lesions.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": shapely.geometry.mapping(SEGMENTED),
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": "tumor"},
                        },
                    }
                ],
            }
        )
    )
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "n.txt").write_text("Metastatic carcinoma <b>present</b>.")
    (tmp_path / "texts" / "t.txt").write_text("Metastasis.")
    vocabulary = tmp_path / "vocabulary.yaml"
    vocabulary.write_text("classes:\n  tumor: [carcinoma, metastasis, metastatic carcinoma]\n")
    args = [
        "report",
        "--predictions",
        str(predictions),
        "--out",
        str(tmp_path),
        "--segment",
        str(tmp_path / "segment"),
        "--reports",
        str(tmp_path / "texts"),
        "--vocabulary",
        str(vocabulary),
    ]
    assert main(args) == 0
    assert "2 done" in capsys.readouterr().out
    out = tmp_path / "report"
    index = (out / "index.md").read_text().splitlines()
    assert index[2].startswith("2 slides; 1 with a class")
    assert index[6].startswith("| [n](n.md) | normal | tumor |")  # the flagged slide first
    page = (out / "n.html").read_text()
    assert "&lt;b&gt;present&lt;/b&gt;" in page and "<b>present" not in page
    made = json.loads((out / "t.json").read_text())
    assert made["sources"]["segment"].endswith("lesions.geojson")
    assert made["text"]["alignment"][0]["status"] == "supported"
    assert "status" in (out / "alignment.csv").read_text().splitlines()[0]
    assert main(args) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out
    assert main(args[:-2]) == 2  # texts without a vocabulary
    assert "give --reports and --vocabulary together" in capsys.readouterr().err
