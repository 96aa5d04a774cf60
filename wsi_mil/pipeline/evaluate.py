"""Slide-level evaluation of a predictions folder against a labels CSV.

Writes ``metrics.json`` (AUC with bootstrap 95 % CI, accuracy, balanced accuracy, F1, confusion
matrix, ROC points), ``roc.png`` and ``confusion_matrix.png``. Predicted labels are taken as the
predictions file states them (decided with the run's validation threshold): evaluation never
re-tunes a threshold on the slides it scores.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsi_mil.pipeline.config import EvaluateSection


def read_predictions_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(class names, rows) of a ``predictions.csv``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions.csv not found (run wsi-mil predict)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        classes = [c[len("prob_"):] for c in header if c.startswith("prob_")]
        if "slide_id" not in header or "predicted_label" not in header or len(classes) < 2:
            raise ValueError(f"{path}: not a wsi-mil predictions.csv (header {header})")
        return classes, list(reader)



def recorded_negative_class(pred_dir: Path) -> str | None:
    """The negative class a predictions file records (from the run), if any."""
    import h5py

    for path in sorted((pred_dir / "predictions").glob("*.h5"))[:1]:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("negative_class")
            return None if value is None else str(value)
    return None



def plot_roc(path: Path, metrics: dict[str, Any]) -> None:
    from matplotlib.figure import Figure

    from tiling.storage import atomic_output

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    for name, curve in metrics["roc"].items():
        ax.plot(curve["fpr"], curve["tpr"], lw=2, label=name)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    auc, ci = metrics["auc"], metrics["auc_ci95"]
    title = "ROC" if auc is None else f"ROC, AUC {auc:.3f}"
    if ci is not None:
        title += f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    if metrics["roc"]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)



def plot_confusion(path: Path, metrics: dict[str, Any]) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    from tiling.storage import atomic_output

    cm = np.asarray(metrics["confusion_matrix"])
    names = metrics["class_names"]
    fig = Figure(figsize=(1.6 + 0.9 * len(names), 1.4 + 0.9 * len(names)))
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"accuracy {metrics['accuracy']:.3f} (n={metrics['n_slides']})")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)



def evaluate_predictions(predictions_dir: str | os.PathLike, labels_csv: str | os.PathLike,
                         out_dir: str | os.PathLike | None = None,
                         negative_class: str | None = None,
                         n_boot: int = 1000, split: str | None = None) -> dict[str, Any]:
    """Metrics of the labelled slides in ``predictions.csv`` (only those of ``split`` of the
    labels CSV when given, e.g. ``test``); writes JSON and two PNGs."""
    import numpy as np

    from tiling.storage import write_text_atomic
    from wsi_mil.metrics.slide import slide_metrics
    from wsi_mil.mil.labels import choose_negative_class, read_labels

    pred_dir = Path(predictions_dir)
    out = Path(out_dir) if out_dir is not None else pred_dir
    classes, rows = read_predictions_csv(pred_dir / "predictions.csv")
    labels = read_labels(labels_csv, class_names=tuple(classes)).by_slide()
    if split is not None:
        labels = {s: row for s, row in labels.items() if row.split == split}
    scored = [r for r in rows if r["slide_id"] in labels]
    unlabelled = len(rows) - len(scored)
    predicted_ids = {r["slide_id"] for r in rows}
    missing = sorted(s for s in labels if s not in predicted_ids)
    if unlabelled:
        warnings.warn(f"{labels_csv}: {unlabelled} predicted slide(s) have no label and are "
                      f"not scored", stacklevel=2)
    if missing:
        warnings.warn(f"{pred_dir}: {len(missing)} labelled slide(s) have no prediction, "
                      f"e.g. {missing[:5]}", stacklevel=2)
    if not scored:
        raise ValueError(f"{pred_dir}: no predicted slide has a label in {labels_csv}")
    in_sample = [r["slide_id"] for r in scored if r.get("in_sample") == "true"]
    if in_sample:
        warnings.warn(
            f"{pred_dir}: {len(in_sample)} of {len(scored)} scored slide(s) were predicted by a "
            f"model that trained on them (e.g. {', '.join(in_sample[:3])}): these metrics are "
            f"in-sample and optimistic. Predict a cross-validated run's own slides out of fold "
            f"(wsi-mil predict, the default) or score held-out slides only", stacklevel=2)
    negative = choose_negative_class(classes, negative_class or recorded_negative_class(pred_dir),
                                     source=str(pred_dir))
    y = np.array([classes.index(labels[r["slide_id"]].label) for r in scored])
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in scored])
    predicted = np.array([classes.index(r["predicted_label"]) for r in scored])
    metrics = slide_metrics(y, probs, predicted, classes, classes.index(negative), n_boot=n_boot)
    metrics.update(negative_class=negative, unlabelled_predictions=unlabelled,
                   in_sample_slides=in_sample,
                   missing_predictions=missing)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_roc(out / "roc.png", metrics)
    plot_confusion(out / "confusion_matrix.png", metrics)
    return metrics


def evaluate_cohort(predictions_dir: str | os.PathLike, labels_csv: str | os.PathLike,
                    section: EvaluateSection, out_dir: str | os.PathLike | None = None, *,
                    annotations_dir: str | os.PathLike | None = None,
                    run_dir: str | os.PathLike | None = None,
                    features_dir: str | os.PathLike | None = None,
                    split: str | None = None,
                    segment_dir: str | os.PathLike | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(slide metrics, lesion metrics or ``{}``) of a predict output folder: the slide metrics
    always, the lesion metrics when lesion annotations are known (``annotations_dir``, else the
    section's). ``split``: score only that split of the labels CSV (the one predicted).
    ``segment_dir``: pixel masks of
    ``wsi-mil segment`` to score beside the tile head."""
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.pipeline.lesions import evaluate_lesions

    pred_dir = Path(predictions_dir)
    out = Path(out_dir) if out_dir is not None else pred_dir
    metrics = evaluate_predictions(pred_dir, labels_csv, out, section.negative_class,
                                   n_boot=section.bootstrap, split=split)
    annotations = annotations_dir if annotations_dir is not None else section.annotations_dir
    if annotations is None:
        return metrics, {}
    scored = {row["slide_id"] for row in read_predictions_csv(pred_dir / "predictions.csv")[1]}
    labels = {r.slide_id: r.label for r in read_labels(labels_csv).rows
              if r.slide_id in scored}  # this run's predictions, not older ones
    lesion = evaluate_lesions(pred_dir / "predictions", labels, annotations, out,
                              section.params(), run_dir=run_dir, features_dir=features_dir,
                              segment_dir=segment_dir)
    return metrics, lesion
