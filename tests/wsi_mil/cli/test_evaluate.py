"""What ``wsi-mil evaluate`` prints for the tasks beyond classification."""

from __future__ import annotations

from pathlib import Path

from wsi_mil.cli.evaluate import print_task_metrics


def test_multilabel_print_gives_each_target_its_own_thresholds(capsys):
    target = {"auc": 0.9, "auc_ci95": [0.8, 1.0], "sensitivity": 0.75, "specificity": 1.0}
    metrics = {
        "task": "multilabel",
        "unit": "slides",
        "n_slides": 12,
        "macro_auc": 0.9,
        "macro_auc_ci95": None,
        "hamming_loss": 0.25,
        "subset_accuracy": 0.5,
        # as predictions.csv records them: one "t1;t2" per fold
        "thresholds": ["0.500000;0.500000", "0.500000;0.698460"],
        "per_target": {"tp53": target, "kras": target},
        "in_sample_slides": [],
    }
    print_task_metrics(metrics, Path("out"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("12 slides: macro AUC 0.900, Hamming loss 0.250")
    assert lines[1].endswith("(threshold 0.500)") and lines[1].startswith("  tp53: AUC 0.900")
    assert lines[2].endswith("(thresholds 0.500, 0.698)")
    assert lines[-1] == "written to out: metrics.json, roc.png"


def test_evaluate_predictions_is_the_folder_of_h5_files_the_old_form_warns(tmp_path, capsys):
    """``--predictions PROJECT/predictions`` (as in heatmap and view); ``--predictions PROJECT``
    (the folder holding predictions.csv, as before) still works for one release, with a
    notice. Both read the same predictions.csv (here rejected for the same reason)."""
    from wsi_mil.cli import main

    project = tmp_path / "project"
    (project / "predictions").mkdir(parents=True)
    (project / "predictions.csv").write_text(
        "slide_id,label,predicted_label,prob_a,prob_b\ns1,,a,0.6,0.4\n"
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\ns1,c\n")
    assert (
        main(["evaluate", "--predictions", str(project / "predictions"), "--labels", str(labels)])
        == 2
    )
    new = capsys.readouterr().err
    assert "unknown label 'c'" in new and "deprecated" not in new
    assert main(["evaluate", "--predictions", str(project), "--labels", str(labels)]) == 2
    old = capsys.readouterr().err
    assert "unknown label 'c'" in old
    assert (
        "holds predictions.csv is deprecated and goes in the next release: use "
        f"--predictions {project / 'predictions'}" in old
    )
