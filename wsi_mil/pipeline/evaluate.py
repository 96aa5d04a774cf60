"""Slide- or patient-level evaluation of a predictions folder against a labels CSV.

Writes ``metrics.json`` (AUC with bootstrap 95 % CI, accuracy, balanced accuracy, F1, confusion
matrix, ROC points, Brier score and ECE), ``roc.png``, ``confusion_matrix.png`` and
``calibration.png`` (the reliability diagram); at ``level="patient"`` the same with a
``_patient`` suffix. Slides are decided as the predictions file states them (each at the
threshold that decided it: its fold's own out of fold, or the ensemble's): evaluation never
re-tunes a threshold on the slides it scores. A patient is decided at its slides' threshold.

The other tasks (the run's task is read from the predictions files) write their own metrics
(:func:`evaluate_task`): multilabel, per-target AUC with CIs, macro AUC, Hamming loss, subset
accuracy and ``roc.png`` (one curve per target); survival, Harrell's and Uno's C, the
time-dependent AUC and the integrated Brier score with CIs and ``km_risk_groups.png`` (Kaplan-Meier
curves of the predicted risk groups, log-rank p); regression, R², MAE, RMSE, Pearson and
Spearman r with CIs and ``scatter.png``. A run trained on patient-level bags is scored per
patient (its slides carry the patient's outputs).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_mil.errors import InputError, MissingInputError
from wsi_mil.project import Project

if TYPE_CHECKING:
    import numpy as np

    from wsi_mil.config.pipeline import EvaluateSection


def read_predictions_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(class names, rows) of a ``predictions.csv``."""
    if not path.is_file():
        raise MissingInputError(f"{path}: predictions.csv not found (run wsi-mil predict)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        classes = [c[len("prob_") :] for c in header if c.startswith("prob_")]
        if "slide_id" not in header or "predicted_label" not in header or len(classes) < 2:
            raise InputError(f"{path}: not a wsi-mil predictions.csv (header {header})")
        return classes, list(reader)


def recorded_negative_class(predictions_dir: Path) -> str | None:
    """The negative class a predictions file records (from the run), if any."""
    value = recorded_attrs(predictions_dir).get("negative_class")
    return None if value is None else str(value)


def recorded_attrs(predictions_dir: Path) -> dict[str, Any]:
    """The attributes of the first predictions file (``<slide_id>.h5``) of ``predictions_dir``
    ({} without one): the run's task, negative class, bag level, survival times."""
    from wsi_mil.mil.predictions import read_prediction_attrs

    for path in sorted(predictions_dir.glob("*.h5"))[:1]:
        return read_prediction_attrs(path)
    return {}


def figure_provenance(metrics: dict[str, Any]) -> str:
    """What a figure scores: how many slides or patients, and whether any model saw them."""
    in_sample = len(metrics.get("in_sample_slides") or [])
    where = (
        "out of sample"
        if not in_sample
        else f"{in_sample} slide(s) IN-SAMPLE (predicted by a model that trained on them)"
    )
    return f"{metrics['n_slides']} {metrics.get('unit', 'slides')}, {where}"


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
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{title}\n{figure_provenance(metrics)}", fontsize=10)
    if metrics["roc"]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def plot_calibration(path: Path, metrics: dict[str, Any]) -> None:
    """The reliability diagram: observed frequency against mean probability per bin, each point
    labelled with its number of slides (or patients)."""
    from matplotlib.figure import Figure

    from tiling.storage import atomic_output

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    points = metrics["reliability"]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    ax.plot(points["mean_predicted"], points["observed"], marker="o", lw=2, label="model")
    for x, y, n in zip(points["mean_predicted"], points["observed"], points["count"], strict=True):
        below = (4, -11) if y > 0.5 else (4, 5)  # inside the axes, off the line
        ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=below, fontsize=7)
    what = metrics["calibrated_quantity"]
    unit = metrics.get("unit", "slides")
    ax.set(
        xlabel=f"mean predicted ({what})", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.set_title(
        f"ECE {metrics['ece']:.3f} ({metrics['ece_bins']} bins; numbers: {unit} per bin), "
        f"Brier {metrics['brier']:.3f}\n{figure_provenance(metrics)}",
        fontsize=10,
    )
    # below the axes: inside, the box would hide points and their counts wherever they fall
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
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
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(
        f"accuracy {metrics['accuracy']:.3f}\n{figure_provenance(metrics)}\n"
        f"decided at {metrics.get('thresholds', 'not recorded')}",
        fontsize=8,
    )
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def describe_thresholds(thresholds: np.ndarray) -> str:
    """One line on the thresholds that decided the scored slides."""
    import numpy as np

    distinct = np.unique(np.round(thresholds, 6))
    if len(distinct) == 1:
        return f"threshold {distinct[0]:.3f}"
    return (
        f"{len(distinct)} thresholds, {distinct.min():.3f}-{distinct.max():.3f} (each at "
        f"the one that decided it: out of fold, its fold's own)"
    )


def evaluate_predictions(
    predictions_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    *,
    out: str | os.PathLike | Project | None = None,
    negative_class: str | None = None,
    n_boot: int = 1000,
    split: str | None = None,
    level: str = "slide",
    patient_aggregate: str = "mean",
) -> dict[str, Any]:
    """Metrics of the labelled slides predicted in ``predictions_dir`` (its ``<slide_id>.h5``
    and the ``predictions.csv`` beside it; only the slides of ``split`` of the labels CSV when
    given, e.g. ``test``), per slide or per patient (``level``); writes JSON and three PNGs
    into the project ``out``'s ``evaluation/`` (default: the project of the predictions)."""
    import numpy as np

    from tiling.storage import write_text_atomic
    from wsi_mil.metrics.slide import aggregate_patients, predict_indices, slide_metrics
    from wsi_mil.mil.labels import choose_negative_class, read_labels

    source = _predictions_project(predictions_dir)
    pred_dir = source.root  # named in messages
    out_dir = Project.of(out if out is not None else source).evaluation_dir
    recorded = recorded_attrs(source.predictions_dir)
    if recorded.get("bag_level") == "patient" and level != "patient":
        warnings.warn(
            f"{pred_dir}: the run was trained on patient-level bags, so its slides "
            f"carry their patient's outputs: scored per patient",
            stacklevel=2,
        )
        level = "patient"
    if recorded.get("task", "classification") != "classification":
        return evaluate_task(
            source, labels_csv, out_dir, recorded, n_boot=n_boot, split=split, level=level
        )
    classes, rows = read_predictions_csv(source.predictions_csv)
    table = read_labels(labels_csv, class_names=tuple(classes))
    labels = table.by_slide()
    if split is not None:
        labels = {s: row for s, row in labels.items() if row.split == split}
    scored, record = _predicted_rows(pred_dir, labels_csv, labels, rows)
    subtypes = (
        "task" in recorded and recorded.get("negative_class") is None and negative_class is None
    )
    if subtypes:  # no negative class: the second class plays positive where one is needed
        negative, negative_index = None, 0
    else:
        negative = choose_negative_class(
            classes,
            negative_class or recorded_negative_class(source.predictions_dir),
            source=str(pred_dir),
        )
        negative_index = classes.index(negative)
    y = np.array([classes.index(labels[r["slide_id"]].label) for r in scored])
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in scored])
    predicted = np.array([classes.index(r["predicted_label"]) for r in scored])
    thresholds = np.array([float(r["threshold"]) if r.get("threshold") else np.nan for r in scored])
    extra: dict[str, Any] = {"level": level}
    unit = "slides"
    if level == "patient":
        if not table.has_patient_id:
            raise InputError(f"{labels_csv}: patient-level metrics need a patient_id column")
        if np.isnan(thresholds).any():
            raise InputError(
                f"{source.predictions_csv}: no threshold column (written by "
                f"an older wsi-mil predict): predict again to score patients"
            )
        patients = [labels[r["slide_id"]].patient_id for r in scored]
        classes_of: dict[str, set[int]] = {}
        for patient, label in zip(patients, y):
            classes_of.setdefault(patient, set()).add(int(label))
        mixed = sorted(p for p, found in classes_of.items() if len(found) > 1)
        ids, y, probs, thresholds = aggregate_patients(
            patients, y, probs, thresholds, negative_index, patient_aggregate
        )
        if mixed:  # one lymph-node patient with one positive node is expected; most is not
            warnings.warn(
                f"{labels_csv}: {len(mixed)} of {len(ids)} patients have slides of "
                f"both classes (e.g. {mixed[0]}) and count as positive: check that "
                f"patient_id names patients (a TMA batch, block or site is not one)",
                stacklevel=2,
            )
        per_class = np.bincount(y, minlength=len(classes))
        if per_class.min() < 5:
            warnings.warn(
                f"{labels_csv}: the patient level has "
                + ", ".join(f"{n} {c}" for c, n in zip(classes, per_class))
                + " patient(s): with fewer than 5 of a class the AUC, its confidence "
                "interval and the accuracy say little",
                stacklevel=2,
            )
        extra.update(mixed_label_patients=len(mixed))
        predicted = predict_indices(probs, thresholds, negative_index)
        unit = "patients"
        extra.update(
            patient_aggregate=patient_aggregate, n_patients=len(ids), n_slides_scored=len(scored)
        )
    metrics = slide_metrics(y, probs, predicted, classes, negative_index, n_boot=n_boot)
    metrics.update(
        extra,
        unit=unit,
        negative_class=negative,
        subtyping=subtypes,
        **record,
        thresholds=(
            describe_thresholds(thresholds) if not np.isnan(thresholds).any() else "not recorded"
        ),
    )
    suffix = "_patient" if level == "patient" else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / f"metrics{suffix}.json", json.dumps(metrics, indent=2) + "\n")
    plot_roc(out_dir / f"roc{suffix}.png", metrics)
    plot_confusion(out_dir / f"confusion_matrix{suffix}.png", metrics)
    plot_calibration(out_dir / f"calibration{suffix}.png", metrics)
    return metrics


def _predicted_rows(
    pred_dir: Path,
    labels_csv: str | os.PathLike,
    labels: dict[str, Any],
    rows: list[dict[str, str]],
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """(the predicted rows with a label, what the metrics record about the rest), with the
    warnings of :func:`evaluate_predictions` (unlabelled, unpredicted, in-sample slides)."""
    scored = [r for r in rows if r["slide_id"] in labels]
    unlabelled = len(rows) - len(scored)
    predicted_ids = {r["slide_id"] for r in rows}
    missing = sorted(s for s in labels if s not in predicted_ids)
    if unlabelled:
        warnings.warn(
            f"{labels_csv}: {unlabelled} predicted slide(s) have no label and are not scored",
            stacklevel=3,
        )
    if missing:
        warnings.warn(
            f"{pred_dir}: {len(missing)} labelled slide(s) have no prediction, e.g. {missing[:5]}",
            stacklevel=3,
        )
    if not scored:
        raise InputError(f"{pred_dir}: no predicted slide has a label in {labels_csv}")
    in_sample = [r["slide_id"] for r in scored if r.get("in_sample") == "true"]
    if in_sample:
        warnings.warn(
            f"{pred_dir}: {len(in_sample)} of {len(scored)} scored slide(s) were predicted by a "
            f"model that trained on them (e.g. {', '.join(in_sample[:3])}): these metrics are "
            f"in-sample and optimistic. Predict a cross-validated run's own slides out of fold "
            f"(wsi-mil predict, the default) or score held-out slides only",
            stacklevel=3,
        )
    return scored, {
        "unlabelled_predictions": unlabelled,
        "in_sample_slides": in_sample,
        "missing_predictions": missing,
    }


def _predictions_project(predictions_dir: str | os.PathLike) -> Project:
    """The project of a predictions folder: its ``predictions.csv`` lies beside the folder."""
    predictions_dir = Path(predictions_dir)
    return Project(predictions_dir.parent, predictions=predictions_dir)


def evaluate_task(
    source: Project,
    labels_csv: str | os.PathLike,
    out: Path,
    recorded: dict[str, Any],
    *,
    n_boot: int = 1000,
    split: str | None = None,
    level: str = "slide",
) -> dict[str, Any]:
    """Metrics of a multilabel, survival or regression run's predictions (the module
    docstring), per slide or per patient (a patient: the mean of its slides' outputs, its
    slides' common label, for multilabel a target present when any slide has it)."""
    import numpy as np

    from tiling.storage import write_text_atomic
    from wsi_mil.metrics.figures import plot_risk_groups, plot_scatter, plot_target_rocs
    from wsi_mil.mil.labels import read_labels

    task = str(recorded["task"])
    names = [str(c) for c in recorded["class_names"]]
    pred_dir, path = source.root, source.predictions_csv
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions.csv not found (run wsi-mil predict)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = (
        [f"prob_{c}" for c in names]
        if task == "multilabel"
        else ["risk"]
        if task == "survival"
        else ["value"]
    )
    if rows and any(c not in rows[0] for c in columns):
        raise ValueError(f"{path}: not the predictions.csv of a {task} run (needs {columns})")
    table = read_labels(labels_csv, task=task, targets=tuple(names) if task != "survival" else ())
    labels = table.by_slide()
    if split is not None:
        labels = {s: row for s, row in labels.items() if row.split == split}
    scored, record = _predicted_rows(pred_dir, labels_csv, labels, rows)
    ids = [r["slide_id"] for r in scored]
    outputs = np.array([[float(r[c]) for c in columns] for r in scored])
    values = np.array([labels[s].values for s in ids], dtype=np.float64)
    thresholds = [r.get("threshold", "") for r in scored]
    survival = None
    grid = np.atleast_1d(np.asarray(recorded.get("survival_times", []), dtype=np.float64))
    if task == "survival":
        survival = _survival_curves(source.predictions_dir, ids)
    unit = "slides"
    extra: dict[str, Any] = {"level": level}
    if level == "patient":
        if not table.has_patient_id:
            raise ValueError(f"{labels_csv}: patient-level metrics need a patient_id column")
        patients = [labels[s].patient_id for s in ids]
        order = list(dict.fromkeys(patients))
        index = {p: [i for i, q in enumerate(patients) if q == p] for p in order}
        for p, members in index.items():
            if task != "multilabel" and len({tuple(values[i]) for i in members}) > 1:
                raise ValueError(
                    f"patient {p!r} has slides with different labels; "
                    f"patient-level metrics need one label per patient"
                )
        outputs = np.array([outputs[m].mean(axis=0) for m in index.values()])
        values = np.array([values[m].max(axis=0) for m in index.values()])
        if survival is not None:
            survival = np.array([survival[m].mean(axis=0) for m in index.values()])
        thresholds = [thresholds[m[0]] for m in index.values()]
        extra.update(n_patients=len(order), n_slides_scored=len(ids))
        ids, unit = order, "patients"
    if task == "multilabel":
        from wsi_mil.metrics.multilabel import multilabel_metrics

        cuts = np.array([[float(t) for t in c.split(";")] for c in thresholds])
        metrics = multilabel_metrics(
            values.astype(int), outputs, (outputs >= cuts).astype(int), names, n_boot=n_boot
        )
    elif task == "survival":
        from wsi_mil.metrics.survival import survival_metrics

        cuts = np.array([float(t) for t in thresholds])
        groups = ["high risk" if r >= c else "low risk" for r, c in zip(outputs[:, 0], cuts)]
        every = table.values([r.slide_id for r in table.rows])
        metrics = survival_metrics(
            values[:, 0],
            values[:, 1],
            outputs[:, 0],
            survival,
            grid,
            groups,
            n_boot=n_boot,
            train=(every[:, 0], every[:, 1]),
        )
    else:
        from wsi_mil.metrics.regression import regression_metrics

        metrics = regression_metrics(values[:, 0], outputs[:, 0], n_boot=n_boot)
    metrics.update(extra)
    metrics.update(
        record,
        task=task,
        unit=unit,
        n_slides=len(ids),
        thresholds=sorted(set(thresholds)) if task != "regression" else None,
    )
    suffix = "_patient" if level == "patient" else ""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"metrics{suffix}.json", json.dumps(metrics, indent=2) + "\n")
    note = f"{len(ids)} {unit} of {Path(labels_csv).name}" + (
        ", out of fold" if not record["in_sample_slides"] else ", SOME IN-SAMPLE"
    )
    if task == "multilabel":
        plot_target_rocs(
            out / f"roc{suffix}.png",
            metrics,
            note + "; decided at each target's validation threshold",
        )
    elif task == "survival":
        plot_risk_groups(
            out / f"km_risk_groups{suffix}.png",
            values[:, 0],
            values[:, 1],
            groups,
            metrics.get("logrank"),
            note + "; groups at each fold's cut (median "
            "risk of its training "
            + ("patients)" if recorded.get("bag_level") == "patient" else "slides)"),
        )
    else:
        plot_scatter(
            out / f"scatter{suffix}.png", values[:, 0], outputs[:, 0], metrics, names[0], note
        )
    return metrics


def _survival_curves(predictions_dir: Path, slide_ids: list[str]) -> np.ndarray | None:
    """Each slide's predicted survival curve (its predictions file's ``survival``)."""
    import numpy as np

    from wsi_mil.mil.predictions import read_prediction_attrs

    curves = []
    for slide_id in slide_ids:
        path = predictions_dir / f"{slide_id}.h5"
        if not path.is_file():
            return None
        attrs = read_prediction_attrs(path)
        if "survival" not in attrs:
            return None
        curves.append(np.atleast_1d(np.asarray(attrs["survival"], dtype=np.float64)))
    return np.array(curves)


def evaluate_cohort(
    predictions_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    *,
    section: EvaluateSection,
    out: str | os.PathLike | Project | None = None,
    annotations_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    split: str | None = None,
    segment_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(slide metrics, lesion metrics or ``{}``) of a predictions folder (as
    :func:`evaluate_predictions`), written to the project ``out``'s ``evaluation/``: the slide
    metrics always, the lesion metrics when lesion annotations are known (``annotations_dir``, else the
    section's). ``split``: score only that split of the labels CSV (the one predicted).
    ``segment_dir``: pixel masks of
    ``wsi-mil segment`` to score beside the tile head."""
    from wsi_mil.explain.lesions import evaluate_lesions
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.segment.evaluate import SegmentedSlides

    source = _predictions_project(predictions_dir)
    project = Project.of(out if out is not None else source)
    metrics = evaluate_predictions(
        predictions_dir,
        labels_csv,
        out=project,
        negative_class=section.negative_class,
        n_boot=section.bootstrap,
        split=split,
        level=section.level,
        patient_aggregate=section.patient_aggregate,
    )
    annotations = annotations_dir if annotations_dir is not None else section.annotations_dir
    if annotations is None:
        return metrics, {}
    if metrics.get("task", "classification") != "classification":
        warnings.warn(
            f"{annotations}: lesion metrics (FROC, tile Dice, pointing game) score a "
            f"classification's lesion map; a {metrics['task']} run is scored with "
            f"wsi-mil explain --annotations instead",
            stacklevel=2,
        )
        return metrics, {}
    scored = {row["slide_id"] for row in read_predictions_csv(source.predictions_csv)[1]}
    labels = {
        r.slide_id: r.label for r in read_labels(labels_csv).rows if r.slide_id in scored
    }  # this run's predictions, not older ones
    lesion = evaluate_lesions(
        source.predictions_dir,
        labels,
        annotations,
        project.evaluation_dir,
        section.params(),
        run_dir=run_dir,
        features_dir=features_dir,
        pixels=SegmentedSlides(segment_dir) if segment_dir else None,
    )
    return metrics, lesion


def compare_predictions(
    a_dir: str | os.PathLike,
    b_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    negative_class: str | None = None,
) -> dict[str, Any]:
    """DeLong's test (:func:`wsi_mil.metrics.auc_comparison.delong_test`) of the AUC difference
    between the predictions of two projects (the ``--out`` of two predicts: their
    ``predictions.csv`` and ``predictions/``) on the slides both predicted and the labels CSV labels;
    writes ``compare.json`` into ``out_dir`` when given. Two classes only."""
    import numpy as np

    from tiling.storage import write_text_atomic
    from wsi_mil.metrics.auc_comparison import delong_test
    from wsi_mil.mil.labels import choose_negative_class, read_labels

    a_dir, b_dir = Path(a_dir), Path(b_dir)
    classes, rows_a = read_predictions_csv(Project(a_dir).predictions_csv)
    classes_b, rows_b = read_predictions_csv(Project(b_dir).predictions_csv)
    if classes != classes_b:
        raise InputError(f"{a_dir} predicts classes {classes}, {b_dir} predicts {classes_b}")
    if len(classes) != 2:
        raise InputError(f"compare needs two classes, {a_dir} has {classes}")
    labels = read_labels(labels_csv, class_names=tuple(classes)).by_slide()
    recorded = recorded_attrs(Project(a_dir).predictions_dir)
    if "task" in recorded and recorded.get("negative_class") is None and negative_class is None:
        positive = classes[1]  # subtypes: AUC is the same either way round
    else:
        negative = choose_negative_class(
            classes,
            negative_class or recorded_negative_class(Project(a_dir).predictions_dir),
            source=str(a_dir),
        )
        positive = classes[1 - classes.index(negative)]
    a = {r["slide_id"]: r for r in rows_a if r["slide_id"] in labels}
    b = {r["slide_id"]: r for r in rows_b if r["slide_id"] in labels}
    shared = sorted(set(a) & set(b))
    only = sorted(set(a) ^ set(b))
    if only:
        warnings.warn(
            f"{len(only)} labelled slide(s) are predicted in only one of {a_dir} and "
            f"{b_dir} (e.g. {', '.join(only[:3])}) and are left out",
            stacklevel=2,
        )
    if not shared:
        raise InputError(f"{a_dir} and {b_dir} share no labelled slide of {labels_csv}")
    for name, rows in ((a_dir, a), (b_dir, b)):
        in_sample = [s for s in shared if rows[s].get("in_sample") == "true"]
        if in_sample:
            warnings.warn(
                f"{name}: {len(in_sample)} of the {len(shared)} compared slides were "
                f"predicted by a model that trained on them: its AUC is in-sample",
                stacklevel=2,
            )
    truth = np.array([labels[s].label == positive for s in shared])
    result = delong_test(
        np.array([float(a[s][f"prob_{positive}"]) for s in shared]),
        np.array([float(b[s][f"prob_{positive}"]) for s in shared]),
        truth,
    )
    result.update(
        a=str(a_dir), b=str(b_dir), positive_class=positive, n_slides=len(shared), left_out=only
    )
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(out_dir) / "compare.json", json.dumps(result, indent=2) + "\n")
    return result
