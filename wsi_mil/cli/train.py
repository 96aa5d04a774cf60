"""``wsi-mil train``: fit MIL models on feature bags and slide labels (cross-validated).

The flags are the fields of :class:`~wsi_mil.mil.params.TrainParams` (the ``train`` config
section); the work is :func:`wsi_mil.pipeline.train.train_run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_options, add_renamed, options_from_args
from wsi_mil.mil.params import TrainParams
from wsi_mil.project import Project


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train attention-MIL on feature bags and a labels CSV",
        description="Train a MIL model per fold (stratified group k-fold on patient_id, or the "
        "labels CSV's split column) and write runs/<name>/: config.yaml, splits.csv, "
        "fold_<k>/{model.pt,model.json,metrics.json,log.csv}, summary.json.",
    )
    p.add_argument(
        "--features",
        required=True,
        type=Path,
        help="folder of feature bags of one encoder (features/<encoder>/)",
    )
    p.add_argument(
        "--labels",
        required=True,
        type=Path,
        help="CSV slide_id,label[,patient_id][,split] (classification; the other "
        "tasks' formats: docs/tasks.md)",
    )
    add_renamed(
        p,
        "--run",
        "--out",
        required=True,
        type=Path,
        help="run folder to write (PROJECT/runs/<name>)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain every fold (by default a fold whose files are complete, from a "
        "run with the same settings, bags and labels, is kept: an interrupted run "
        "resumes)",
    )
    add_options(p.add_argument_group("training"), TrainParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.train import train_run

    params = options_from_args(TrainParams, args)
    runs = args.run.parent  # --run is the run folder itself: runs/<name>
    summary = train_run(
        args.features,
        args.labels,
        out=Project(runs, runs=runs),
        name=args.run.name,
        params=params,
        resume=not args.overwrite,
    )
    if summary.get("task", "classification") != "classification":
        for line in task_summary_lines(summary):
            print(line)
        print(f"run written to {args.run} (every figure above in summary.json)")
        return 0
    n = summary["n_folds"]
    if summary.get("subtyping"):
        print(
            f"subtypes {summary['class_names']} (no negative class): the segmentation head "
            f"learns each class's tiles against the other classes'"
        )
    for name in ("auc", "accuracy", "balanced_accuracy", "f1", "brier", "ece"):
        value = summary[name]
        if value["mean"] is None:
            continue
        spread = f" ± {value['std']:.3f} (sd)" if value["std"] is not None else ""
        print(f"{name}: {value['mean']:.3f}{spread} over {n} fold(s), test slides")
    pooled = summary.get("pooled_out_of_fold")
    if pooled is not None:
        auc = "n/a" if pooled["auc"] is None else f"{pooled['auc']:.3f}"
        print(
            f"pooled out of fold ({pooled['n_slides']} slides, each fold's threshold): AUC "
            f"{auc}, accuracy {pooled['accuracy']:.3f}, Brier {pooled['brier']:.3f}, ECE "
            f"{pooled['ece']:.3f}"
        )
    print(
        f"threshold for new slides (the ensemble of {n} fold(s)): "
        f"{summary['ensemble_threshold']:.3f} ({summary['ensemble_threshold_rule']})"
    )
    print(f"run written to {args.run} (every figure above in summary.json)")
    return 0


def _fmt(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def task_summary_lines(summary: dict) -> list[str]:
    """What ``train`` prints for a multilabel, survival or regression run: each headline
    metric's mean ± std over folds, then the pooled out-of-fold metrics with their CIs."""
    from wsi_mil.mil.task_runs import TASK_SUMMARY_METRICS

    task, n = summary["task"], summary["n_folds"]
    unit = "patients" if summary.get("bag_level") == "patient" else "slides"  # one bag each
    lines = [
        f"task {task}: {', '.join(summary['class_names'])}"
        + (" (patient-level bags)" if unit == "patients" else "")
    ]
    for name in TASK_SUMMARY_METRICS[task]:
        value = summary[name]
        if value["mean"] is None:
            continue
        spread = f" ± {value['std']:.3f} (sd)" if value["std"] is not None else ""
        lines.append(f"{name}: {value['mean']:.3f}{spread} over {n} fold(s), test {unit}")
    pooled = summary.get("pooled_out_of_fold")
    if pooled is not None:
        head = f"pooled out of fold ({pooled['n_slides']} {unit}"
        if task == "multilabel":
            lines.append(
                f"{head}, each target at each fold's threshold): macro AUC "
                f"{_fmt(pooled['macro_auc'], pooled['macro_auc_ci95'])}, Hamming loss "
                f"{pooled['hamming_loss']:.3f}, subset accuracy "
                f"{pooled['subset_accuracy']:.3f}"
            )
            for target, m in pooled["per_target"].items():
                lines.append(f"  {target}: AUC {_fmt(m['auc'], m['auc_ci95'])}")
        elif task == "survival":
            lines.append(
                f"{head}, {pooled['n_events']} events): Harrell's C "
                f"{_fmt(pooled['harrell_c'], pooled['harrell_c_ci95'])}, Uno's C "
                f"{_fmt(pooled['uno_c'], pooled['uno_c_ci95'])}"
            )
            lines.append(
                f"  time-dependent AUC (mean over {len(pooled['td_auc_times'])} times) "
                f"{_fmt(pooled['td_auc_mean'], pooled['td_auc_mean_ci95'])}, "
                f"integrated Brier score "
                f"{_fmt(pooled['integrated_brier'], pooled['integrated_brier_ci95'])}"
            )
            logrank = pooled.get("logrank")
            if logrank:
                groups = ", ".join(f"{g} {k}" for g, k in logrank["groups"].items())
                lines.append(
                    f"  risk groups ({groups}; each fold's cut: the median risk of its "
                    f"training {unit}): log-rank p {logrank['p_value']:.3g}"
                )
        else:
            lines.append(
                f"{head}): R² {_fmt(pooled['r2'], pooled['r2_ci95'])}, MAE "
                f"{_fmt(pooled['mae'], pooled['mae_ci95'])}"
            )
            lines.append(
                f"  Pearson r {_fmt(pooled['pearson_r'], pooled['pearson_r_ci95'])}, "
                f"Spearman r {_fmt(pooled['spearman_r'], pooled['spearman_r_ci95'])}"
            )
    if task != "regression":
        lines.append(
            f"decision rule for new slides (the ensemble of {n} fold(s)): "
            f"{summary['ensemble_threshold_rule']}"
        )
    return lines
