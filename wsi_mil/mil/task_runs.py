"""The run-level step of a multilabel, survival or regression run (a classification's is
:func:`wsi_mil.mil.train.finish_run`): per fold ``model.json``, ``metrics.json``,
``val_predictions.csv`` and ``test_predictions.csv``, then ``summary.json``'s numbers (mean ±
std over folds and the pooled out-of-fold metrics) and, for the pooled out-of-fold predictions,
``km_risk_groups.png`` (survival) or ``scatter.png`` (regression).

What decides a slide is never chosen on it. Multilabel: each target's threshold as a binary
classification's (:func:`wsi_mil.mil.thresholds.fold_thresholds`: every fold's validation
predictions pooled minus fold k's test slides). Survival: the risk-group cut of fold k is the
median risk of fold k's training slides. Regression decides nothing (the value is the output).
The ensemble of folds for new slides: each target's threshold at the mean of the folds'
threshold logits (with the mean of their logits); the mean of the folds' risk cuts (with the
mean of their risks).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tiling.storage import csv_text, write_text_atomic
from wsi_mil.mil.labels import LabelTable
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.tasks import Task
from wsi_mil.mil.thresholds import ENSEMBLE_RULE, ensemble_threshold, fold_thresholds

logger = logging.getLogger(__name__)

#: each task's headline metrics, summarised as mean ± std over folds
TASK_SUMMARY_METRICS = {
    "multilabel": ("macro_auc", "hamming_loss", "subset_accuracy"),
    "survival": ("harrell_c", "uno_c", "td_auc_mean", "integrated_brier"),
    "regression": ("r2", "mae", "pearson_r", "spearman_r"),
}
#: how a survival fold's risk-group cut is chosen
RISK_CUT_RULE = "median risk of the fold's training slides"


def summarise(fold_metrics: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, Any]:
    """Mean ± std (ddof 1) over folds of each metric in ``names``."""
    out: dict[str, Any] = {}
    for name in names:
        values = [m[name] for m in fold_metrics if m.get(name) is not None]
        out[name] = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "values": values,
        }
    return out


def task_metrics(
    task: Task,
    labels: LabelTable,
    ids: list[str],
    outputs: np.ndarray,
    decided: np.ndarray | None,
    survival: np.ndarray | None,
    groups: list[str] | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The metrics of one set of slides' outputs (:mod:`wsi_mil.metrics.multilabel`,
    :mod:`~wsi_mil.metrics.survival`, :mod:`~wsi_mil.metrics.regression`)."""
    values = labels.values(ids)
    if task.kind == "multilabel":
        from wsi_mil.metrics.multilabel import multilabel_metrics

        assert decided is not None  # a multilabel run decides every target at its threshold
        return multilabel_metrics(
            values.astype(int), outputs, decided, task.output_names, n_boot=n_boot, seed=seed
        )
    if task.kind == "survival":
        from wsi_mil.metrics.survival import survival_metrics

        every = labels.values([r.slide_id for r in labels.rows])
        return survival_metrics(
            values[:, 0],
            values[:, 1],
            outputs[:, 0],
            survival,
            task.fitted["survival_times"],
            groups,
            n_boot=n_boot,
            seed=seed,
            train=(every[:, 0], every[:, 1]),
        )
    from wsi_mil.metrics.regression import regression_metrics

    return regression_metrics(values[:, 0], outputs[:, 0], n_boot=n_boot, seed=seed)


def output_columns(task: Task) -> list[str]:
    """The per-slide output columns of ``predictions.csv``: ``prob_<class or target>``,
    ``risk`` (survival), ``value`` (regression)."""
    if task.kind in ("classification", "multilabel"):
        return [f"prob_{name}" for name in task.output_names]
    return ["risk"] if task.kind == "survival" else ["value"]


def task_prediction_rows(
    slide_ids: list[str], outputs: np.ndarray, predicted: list[str], labels: LabelTable, task: Task
) -> list[dict[str, Any]]:
    """``val/test_predictions.csv`` rows of any task: the label, the predicted label and the
    task's output columns (:func:`output_columns`)."""
    by_slide = labels.by_slide()
    rows = []
    for slide_id, values, label in zip(slide_ids, outputs, predicted, strict=True):
        row: dict[str, Any] = {
            "slide_id": slide_id,
            "label": by_slide[slide_id].label,
            "predicted_label": label,
        }
        row.update({c: round(float(v), 6) for c, v in zip(output_columns(task), values)})
        rows.append(row)
    return rows


def finish_task_run(
    out_dir: Path,
    trained: list[dict[str, Any]],
    labels: LabelTable,
    task: Task,
    params: TrainParams,
    encoder: str,
) -> dict[str, Any]:
    """Fold files and the summary of a multilabel, survival or regression run (module
    docstring); returns the summary."""
    fitted = {r["fold"]: dataclasses.replace(task, fitted=dict(r["fitted"])) for r in trained}
    outputs = {
        r["fold"]: {
            part: fitted[r["fold"]].decode(np.asarray(r[part]["logits"]))
            for part in ("val", "test")
        }
        for r in trained
    }
    decisions = _decisions(task, trained, labels, outputs, params)
    fold_metrics: list[dict[str, Any]] = []
    pooled: dict[str, list[Any]] = {
        "ids": [],
        "outputs": [],
        "decided": [],
        "survival": [],
        "groups": [],
    }
    for r in trained:
        fold, fold_task = r["fold"], fitted[r["fold"]]
        threshold, rule = decisions[fold]
        fold_dir = out_dir / f"fold_{fold}"
        parts = {}
        for part in ("val", "test"):
            ids, out = r[part]["slide_ids"], outputs[fold][part]
            labels_of = fold_task.predicted_labels(out, threshold)
            decided = (
                (out >= np.asarray(threshold)).astype(int) if task.kind == "multilabel" else None
            )
            survival = (
                fold_task.survival(np.asarray(r[part]["logits"]), task.fitted["survival_times"])
                if task.kind == "survival"
                else None
            )
            parts[part] = (ids, out, labels_of, decided, survival)
        ids, out, labels_of, decided, survival = parts["test"]
        groups = labels_of if task.kind == "survival" else None
        metrics = task_metrics(
            fold_task, labels, ids, out, decided, survival, groups, params.bootstrap, params.seed
        )
        vids, vout, vlabels, vdecided, vsurvival = parts["val"]
        metrics.update(
            fold=fold,
            threshold=threshold,
            threshold_rule=rule,
            best_epoch=r["best_epoch"],
            epochs_run=r["epochs_run"],
            n_train=r["n_train"],
            n_val=r["n_val"],
            validation=task_metrics(
                fold_task,
                labels,
                vids,
                vout,
                vdecided,
                vsurvival,
                vlabels if groups else None,
                0,
                params.seed,
            ),
        )
        meta = {
            **r["model_config"],
            **fold_task.meta(),
            "bag_level": params.bag_level,
            "threshold": threshold,
            "threshold_rule": rule,
            "encoder": encoder,
            "fold": fold,
            "best_epoch": r["best_epoch"],
            "run": out_dir.name,
        }
        write_text_atomic(fold_dir / "model.json", json.dumps(meta, indent=2) + "\n")
        write_text_atomic(fold_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        for part in ("val", "test"):
            pids, pout, plabels, _, _ = parts[part]
            write_text_atomic(
                fold_dir / f"{part}_predictions.csv",
                csv_text(task_prediction_rows(pids, pout, plabels, labels, task)),
            )
        fold_metrics.append(metrics)
        for key, value in zip(
            ("ids", "outputs", "decided", "survival", "groups"),
            (ids, out, decided, survival, groups),
        ):
            pooled[key].append(value)
        logger.info("fold %s: %s", fold, _headline(task, metrics))
    names = TASK_SUMMARY_METRICS[task.kind]
    summary: dict[str, Any] = {
        "model": params.model,
        "class_names": list(task.output_names),
        "n_folds": len(trained),
        "thresholds": [
            {"fold": f, "threshold": t, "rule": rule} for f, (t, rule) in decisions.items()
        ],
        **summarise(fold_metrics, names),
    }
    summary.update(_ensemble(task, decisions))
    if len(trained) > 1:
        ids = [s for part in pooled["ids"] for s in part]
        out = np.concatenate(pooled["outputs"])
        decided = np.concatenate(pooled["decided"]) if task.kind == "multilabel" else None
        survival = np.concatenate(pooled["survival"]) if task.kind == "survival" else None
        groups = [g for part in pooled["groups"] for g in part] if task.kind == "survival" else None
        metrics = task_metrics(
            task, labels, ids, out, decided, survival, groups, params.bootstrap, params.seed
        )
        metrics["thresholds"] = "each fold's own, for its test slides"
        summary["pooled_out_of_fold"] = metrics
        _pooled_figure(
            out_dir,
            task,
            labels,
            ids,
            out,
            groups,
            metrics,
            "patients" if params.bag_level == "patient" else "slides",
        )
    return summary


def _decisions(
    task: Task,
    trained: list[dict[str, Any]],
    labels: LabelTable,
    outputs: dict[int, dict[str, np.ndarray]],
    params: TrainParams,
) -> dict[int, tuple[Any, str]]:
    """fold -> (threshold: per target, the risk cut, or None; the rule that chose it)."""
    if task.kind == "survival":
        return {r["fold"]: (float(r["risk_cut"]), RISK_CUT_RULE) for r in trained}
    if task.kind == "regression":
        return {r["fold"]: (None, "none: the predicted value is the output") for r in trained}
    per_target = []
    for t in range(task.n_outputs):
        per_target.append(
            fold_thresholds(
                [r["val"]["slide_ids"] for r in trained],
                [labels.values(r["val"]["slide_ids"])[:, t].astype(int) for r in trained],
                [
                    np.stack(
                        [1 - outputs[r["fold"]]["val"][:, t], outputs[r["fold"]]["val"][:, t]],
                        axis=1,
                    )
                    for r in trained
                ],
                [r["test"]["slide_ids"] for r in trained],
                [r["fold"] for r in trained],
                0,
                params.threshold_min_per_class,
                unit=f"{params.bag_level}s",
            )
        )
    return {
        r["fold"]: (
            [per_target[t][i].threshold for t in range(task.n_outputs)],
            "; ".join(
                f"{name}: {per_target[t][i].rule}" for t, name in enumerate(task.output_names)
            ),
        )
        for i, r in enumerate(trained)
    }


def _ensemble(task: Task, decisions: dict[int, tuple[Any, str]]) -> dict[str, Any]:
    """The ensemble's decision rule for new slides (the module docstring)."""
    values = [t for t, _ in decisions.values()]
    if task.kind == "multilabel":
        several = len(values) > 1
        return {
            "ensemble_threshold": [
                ensemble_threshold([v[t] for v in values]) for t in range(task.n_outputs)
            ],
            "ensemble_threshold_rule": ENSEMBLE_RULE
            if several
            else next(iter(decisions.values()))[1],
        }
    if task.kind == "survival":
        return {
            "ensemble_threshold": float(np.mean(values)),
            "ensemble_threshold_rule": "mean of the folds' risk cuts (the ensemble's risk "
            "is the mean of the folds' risks)",
        }
    return {"ensemble_threshold": None, "ensemble_threshold_rule": "none"}


def _headline(task: Task, metrics: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    n = metrics["n_slides"]
    if task.kind == "multilabel":
        return (
            f"test macro AUC {fmt(metrics['macro_auc'])}, subset accuracy "
            f"{fmt(metrics['subset_accuracy'])} ({n} slides)"
        )
    if task.kind == "survival":
        return (
            f"test Harrell's C {fmt(metrics['harrell_c'])}, Uno's C "
            f"{fmt(metrics['uno_c'])} ({n} slides, {metrics['n_events']} events)"
        )
    return f"test R² {fmt(metrics['r2'])}, MAE {fmt(metrics['mae'])} ({n} slides)"


def _pooled_figure(
    out_dir: Path,
    task: Task,
    labels: LabelTable,
    ids: list[str],
    outputs: np.ndarray,
    groups: list[str] | None,
    metrics: dict[str, Any],
    unit: str = "slides",
) -> None:
    """``km_risk_groups.png`` or ``scatter.png`` of the pooled out-of-fold predictions (one per
    bag: ``unit`` says whether a bag is a slide or a patient)."""
    from wsi_mil.metrics.figures import plot_risk_groups, plot_scatter

    values = labels.values(ids)
    note = f"pooled out of fold, {len(ids)} {unit} of {labels.path.name}"
    if task.kind == "survival":
        rule = RISK_CUT_RULE.replace("slides", unit)
        assert groups is not None  # a survival run splits its bags into risk groups
        plot_risk_groups(
            out_dir / "km_risk_groups.png",
            values[:, 0],
            values[:, 1],
            groups,
            metrics.get("logrank"),
            f"{note}; each fold's cut: {rule}",
        )
    elif task.kind == "regression":
        plot_scatter(
            out_dir / "scatter.png",
            values[:, 0],
            outputs[:, 0],
            metrics,
            task.output_names[0],
            note,
        )
