"""``wsi-mil train``, ``predict`` and ``evaluate`` end to end on generated bags."""

from __future__ import annotations

import json

import pytest

from wsi_mil.cli import main
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


def test_train_predict_evaluate(tmp_path, capsys, device):
    features_dir, labels_csv = write_planted_bags(
        tmp_path, planted_bags(12, (5, 15), 8, shift=4.0, seed=3)
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--features",
                str(features_dir),
                "--labels",
                str(labels_csv),
                "--run",
                str(run),
                "--folds",
                "2",
                "--epochs",
                "2",
                "--lr",
                "1e-3",
                "--seed",
                "1",
                "--hidden-dims",
                "16",
                "--attention-dim",
                "8",
                "--device",
                device,
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "accuracy:" in printed
    assert printed.splitlines()[-1] == f"run written to {run} (every figure above in summary.json)"
    assert (run / "summary.json").is_file() and (run / "fold_1" / "model.pt").is_file()
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--features",
                str(features_dir),
                "--out",
                str(out),
                "--fold",
                "0",
                "--device",
                device,
            ]
        )
        == 0
    )
    assert len(list((out / "predictions").glob("*.h5"))) == 12
    assert "12 done" in capsys.readouterr().out
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(out / "predictions"),
                "--labels",
                str(labels_csv),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    evaluation = out / "evaluation"  # the project layout's folder, as wsi-mil run writes it
    assert f"written to {evaluation}:" in capsys.readouterr().out
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["n_slides"] == 12 and metrics["negative_class"] == "neg"
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    for png in ("roc.png", "confusion_matrix.png"):
        assert (evaluation / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rejects_labels_outside_the_model_classes(tmp_path, capsys):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "predictions.csv").write_text(
        "slide_id,label,predicted_label,prob_a,prob_b\ns1,,a,0.6,0.4\n"
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\ns1,c\n")
    assert main(["evaluate", "--predictions", str(out), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "line 2: unknown label 'c'" in err and "Traceback" not in err


def test_train_rejects_unknown_model(tmp_path, capsys):
    features_dir, labels_csv = write_planted_bags(tmp_path, planted_bags(4, 3, 4))
    assert (
        main(
            [
                "train",
                "--features",
                str(features_dir),
                "--labels",
                str(labels_csv),
                "--run",
                str(tmp_path / "run"),
                "--model",
                "nope",
            ]
        )
        == 2
    )
    assert "TrainParams.model = 'nope'" in capsys.readouterr().err


def test_train_without_a_recognisable_negative_class_trains_subtypes_and_says_so(
    tmp_path, capsys, device
):
    """No class named as lesion-free: the classes are subtypes (docs/tasks.md), not an error."""
    features_dir, labels_csv = write_planted_bags(tmp_path, planted_bags(8, 3, 4))
    text = labels_csv.read_text().replace(",neg", ",luminal").replace(",pos", ",basal")
    labels_csv.write_text(text)
    assert (
        main(
            [
                "train",
                "--features",
                str(features_dir),
                "--labels",
                str(labels_csv),
                "--run",
                str(tmp_path / "run"),
                "--folds",
                "2",
                "--epochs",
                "1",
                "--hidden-dims",
                "8",
                "--attention-dim",
                "4",
                "--bootstrap",
                "0",
                "--device",
                device,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "subtypes ['basal', 'luminal'] (no negative class)" in out
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "negative_class: null" in config and "segmentation_head: one_vs_rest" in config


def test_train_leaves_out_labelled_slides_without_a_bag(tmp_path, capsys):
    features_dir, labels_csv = write_planted_bags(tmp_path, planted_bags(12, 4, 4, shift=4.0))
    next(iter(sorted(features_dir.glob("*.h5")))).unlink()
    assert (
        main(
            [
                "train",
                "--features",
                str(features_dir),
                "--labels",
                str(labels_csv),
                "--run",
                str(tmp_path / "run"),
                "--folds",
                "2",
                "--epochs",
                "1",
                "--min-epochs",
                "1",
                "--hidden-dims",
                "8",
                "--attention-dim",
                "4",
                "--device",
                "cpu",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "1 labelled slide(s) have no bag" in err and "left out" in err
    assert (
        main(
            [
                "train",
                "--features",
                str(features_dir),
                "--labels",
                str(labels_csv),
                "--run",
                str(tmp_path / "run2"),
                "--missing-bags",
                "error",
            ]
        )
        == 2
    )


@pytest.mark.parametrize("verb", ["train", "predict", "evaluate"])
def test_help_renders(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    assert "--features" in capsys.readouterr().out or verb == "evaluate"


def test_rerunning_train_keeps_complete_folds_and_overwrite_retrains_them(tmp_path, device):
    """The same command again resumes (what the CLI says after an interrupt); --overwrite
    trains every fold afresh."""
    features_dir, labels_csv = write_planted_bags(
        tmp_path, planted_bags(12, (5, 15), 8, shift=4.0, seed=3)
    )
    run = tmp_path / "run"
    command = [
        "train",
        "--features",
        str(features_dir),
        "--labels",
        str(labels_csv),
        "--run",
        str(run),
        "--folds",
        "2",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--hidden-dims",
        "16",
        "--attention-dim",
        "8",
        "--device",
        device,
        "--bootstrap",
        "0",
    ]
    assert main(command) == 0
    first = {k: (run / f"fold_{k}" / "model.pt").stat().st_mtime_ns for k in range(2)}
    assert main(command) == 0
    assert {k: (run / f"fold_{k}" / "model.pt").stat().st_mtime_ns for k in range(2)} == first
    assert main([*command, "--overwrite"]) == 0
    after = {k: (run / f"fold_{k}" / "model.pt").stat().st_mtime_ns for k in range(2)}
    assert all(after[k] != first[k] for k in range(2))
    # a changed setting is another run: nothing is kept
    assert main([*command, "--lr", "3e-3"]) == 0
    assert all((run / f"fold_{k}" / "model.pt").stat().st_mtime_ns != after[k] for k in range(2))
