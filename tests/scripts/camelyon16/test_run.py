"""The Camelyon16 protocol end to end on a tiny synthetic cohort (the ``--dry-run``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "camelyon16" / "run.py"


@pytest.mark.slow
def test_dry_run_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "dry"
    command = [
        sys.executable,
        str(SCRIPT),
        "--dry-run",
        str(out),
        "--size-px",
        "1024",
        "--cohort-train",
        "5",
        "--cohort-test",
        "2",
        "--folds",
        "2",
        "--val-fraction",
        "0.5",
        "--epochs",
        "3",
        "--seeds",
        "0",
        "1",
        "--heatmaps",
        "2",
        "--extract-workers",
        "0",
        "--perturbation-steps",
        "5",
        "--perturbation-random",
        "2",
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["n_train"] == 10 and results["n_test"] == 4
    assert set(results["seeds"]) == {"0", "1"}
    for seed in results["seeds"].values():
        assert seed["slide"]["n_slides"] == 4 and seed["slide"]["auc"] is not None
        lesion = seed["lesion"]
        assert lesion["n_tumour_annotated"] == 2 and lesion["froc"] is not None
        assert lesion["explain"]["deletion_slides"] == 2
        # the weakly supervised head and the pixel segmenter are reported beside it
        assert seed["weak"]["lesion"]["n_tumour_annotated"] == 2
        assert seed["pixel"]["n_tumour"] == 2 and seed["pixel"]["mask"]["dice"] is not None
    assert set(results["stages"]) >= {
        "cohort",
        "tile",
        "extract",
        "train",
        "predict",
        "lesion_metrics",
        "heatmap",
    }
    report = (out / "report.md").read_text()
    assert "| Test AUC |" in report and "| FROC (Camelyon16 score) |" in report
    assert "| Weakly supervised head (slide labels only): test AUC |" in report
    assert "| Pixel segmenter in the flagged tiles: pixel Dice |" in report
    for png in ("report_roc.png", "report_froc.png", "report_perturbation.png"):
        assert (out / png).stat().st_size > 0
    assert len(results["heatmaps"]) == 2
    for slide_id in results["heatmaps"]:
        assert (out / "heatmaps" / slide_id / "overlay.png").is_file()
