"""What ``wsi-mil evaluate`` prints for the tasks beyond classification."""

from __future__ import annotations

from pathlib import Path

from wsi_mil.cli.evaluate import print_task_metrics


def test_multilabel_print_gives_each_target_its_own_thresholds(capsys):
    target = {"auc": 0.9, "auc_ci95": [0.8, 1.0], "sensitivity": 0.75, "specificity": 1.0}
    metrics = {"task": "multilabel", "unit": "slides", "n_slides": 12, "macro_auc": 0.9,
               "macro_auc_ci95": None, "hamming_loss": 0.25, "subset_accuracy": 0.5,
               # as predictions.csv records them: one "t1;t2" per fold
               "thresholds": ["0.500000;0.500000", "0.500000;0.698460"],
               "per_target": {"tp53": target, "kras": target}, "in_sample_slides": []}
    print_task_metrics(metrics, Path("out"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("12 slides: macro AUC 0.900, Hamming loss 0.250")
    assert lines[1].endswith("(threshold 0.500)") and lines[1].startswith("  tp53: AUC 0.900")
    assert lines[2].endswith("(thresholds 0.500, 0.698)")
    assert lines[-1] == "written to out: metrics.json, roc.png"
