"""The quick demo end to end: synthetic cohort -> tiles -> features -> MIL -> heatmaps -> scores.

The numbers the demo prints must be the run's own (read back from its metric files), and the
model must actually separate tumour from normal slides it never saw (slide AUC > 0.9).
"""

from __future__ import annotations

import json

import pytest

from wsi_mil.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end_then_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    metrics = json.loads((out / "evaluation" / "metrics.json").read_text(encoding="utf-8"))
    lesion = json.loads((out / "evaluation" / "lesion_metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_slides"] == 8  # the held-out test split of the quick cohort
    assert metrics["auc"] > 0.9
    dice, pointing = lesion["segmentation"]["dice"], lesion["explain"]["pointing_game"]
    assert dice is not None and pointing is not None
    for name, value in (
        ("slide AUC", metrics["auc"]),
        ("accuracy", metrics["accuracy"]),
        ("tile-level Dice", dice),
        ("pointing game", pointing),
    ):
        assert f"{name}" in printed and f"{value:.3f}" in printed.split(name, 1)[1][:20]

    test_ids = sorted(p.stem for p in (out / "predictions").glob("*.h5"))
    assert len(test_ids) == 8 and all(s.startswith("test_") for s in test_ids)
    for slide_id in test_ids:
        for name in ("overlay.png", "segmentation.png", "tiles.geojson", "segmentation.geojson"):
            assert (out / "heatmaps" / slide_id / name).is_file()
    assert (out / "runs" / "demo" / "summary.json").is_file()
    assert (out / "config.yaml").is_file()

    assert main(["demo", "--quick", "--out", str(out)]) == 0  # resumes: nothing to redo
    again = capsys.readouterr().out
    assert "train] skipped" in again
    for stage in ("tile", "extract", "predict", "heatmap"):
        assert f"[{stage}] {stage}: 0 done" in again
