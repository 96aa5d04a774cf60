"""``wsi-mil evaluate``: slide metrics of a predictions folder against a labels CSV, and lesion
metrics when lesion annotations are given.

The flags are the fields of the ``evaluate`` config section; the work is
:func:`wsi_mil.pipeline.evaluate.evaluate_predictions` (and
:func:`wsi_mil.explain.lesions.evaluate_lesions` with ``--annotations``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsi_mil.cli.options import add_options, add_renamed, options_from_args
from wsi_mil.config.pipeline import EvaluateSection
from wsi_mil.project import PREDICTIONS, PREDICTIONS_CSV, Project


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="slide metrics, ROC curve and confusion matrix of predictions",
        description="Compare predictions.csv (from predict) with a labels CSV; with "
        "--annotations also the lesion-level FROC, tile Dice and explainability scores.",
    )
    p.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="folder of <slide_id>.h5 predictions (PROJECT/predictions; predictions.csv beside it)",
    )
    p.add_argument("--labels", required=True, type=Path, help="labels CSV slide_id,label,...")
    add_renamed(
        p,
        "--evaluation",
        "--out",
        type=Path,
        default=None,
        help="folder to write metrics.json and the PNGs to (default: PROJECT/evaluation, "
        "PROJECT being the folder that holds the predictions folder)",
    )
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        help="run folder of the predictions (for deletion/insertion curves)",
    )
    p.add_argument(
        "--features",
        type=Path,
        default=None,
        help="feature bags of the predictions (for deletion/insertion curves)",
    )
    p.add_argument(
        "--segment",
        type=Path,
        default=None,
        help="segment/ folder of wsi-mil segment: score its pixel masks beside the tile head",
    )
    add_options(
        p.add_argument_group("evaluation"),
        EvaluateSection,
        flags={"annotations_dir": "--annotations"},
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.evaluate import evaluate_cohort

    section = options_from_args(EvaluateSection, args)
    predictions = predictions_folder(args.predictions)
    out = args.evaluation or Project(predictions.parent).evaluation_dir
    metrics, lesion = evaluate_cohort(
        predictions,
        args.labels,
        section=section,
        out=Project(out, evaluation=out),
        run_dir=args.run,
        features_dir=args.features,
        segment_dir=args.segment,
    )
    if metrics.get("task", "classification") != "classification":
        print_task_metrics(metrics, out)
        return 0
    auc, ci = metrics["auc"], metrics["auc_ci95"]
    auc_text = "n/a" if auc is None else f"{auc:.3f}"
    if ci is not None:
        auc_text += f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    unit = metrics["unit"]
    if unit == "patients":
        print(
            f"patient level: {metrics['n_patients']} patients from {metrics['n_slides_scored']} "
            f"slides, each patient the {metrics['patient_aggregate']} of its slides' "
            f"probabilities, positive when any of its slides is"
        )
    if metrics.get("subtyping"):
        print(
            f"subtypes {metrics['class_names']} (no negative class); F1 and the sensitivities "
            f"take {metrics['positive_class']} as positive"
        )
    print(
        f"{metrics['n_slides']} {unit}: AUC {auc_text}, accuracy {metrics['accuracy']:.3f}, "
        f"F1 {metrics['f1']:.3f}; decided at {metrics['thresholds']}"
    )
    print(
        f"calibration: Brier score {metrics['brier']:.3f}, ECE {metrics['ece']:.3f} "
        f"({metrics['ece_bins']} bins, {metrics['calibrated_quantity']})"
    )
    if metrics.get("sensitivity_at_90_specificity") is not None:
        print(
            f"sensitivity {metrics['sensitivity_at_90_specificity']:.3f} at 90 % specificity, "
            f"{metrics['sensitivity_at_95_specificity']:.3f} at 95 %; false-negative rate "
            f"{metrics['false_negative_rate']:.3f} at the run's thresholds"
        )
    if metrics["in_sample_slides"]:
        n_scored = metrics.get("n_slides_scored", metrics["n_slides"])
        print(
            f"IN-SAMPLE: {len(metrics['in_sample_slides'])} of {n_scored} slides "
            f"were predicted by a model that trained on them",
            file=sys.stderr,
        )
    if lesion:
        print(
            f"lesions: FROC {lesion['froc']}, tile Dice {lesion['segmentation']['dice']}, "
            f"pointing game {lesion['explain']['pointing_game']} "
            f"({lesion['n_tumour_annotated']} annotated tumour slides)"
        )
        pixel = lesion.get("pixel_segmentation")
        if pixel:
            print(
                f"pixel masks: Dice {pixel['mask']['dice']} (tile head on the same pixels: "
                f"{pixel['tile_head']['dice']}), FROC {pixel['froc']} "
                f"({pixel['n_slides']} segmented slides)"
            )
    suffix = "_patient" if unit == "patients" else ""
    print(
        f"written to {out}: metrics{suffix}.json, roc{suffix}.png, "
        f"confusion_matrix{suffix}.png, calibration{suffix}.png"
    )
    return 0


def predictions_folder(given: Path) -> Path:
    """The folder of ``<slide_id>.h5`` predictions that ``--predictions`` names.

    ``--predictions`` meant the folder holding ``predictions.csv`` (predict's ``--out``) up to
    0.1.0; that spelling still works for one release, with a notice on stderr.
    """
    if (given / PREDICTIONS_CSV).is_file():  # the new form has it beside, not inside
        print(
            f"wsi-mil evaluate: --predictions naming the folder that holds predictions.csv is "
            f"deprecated and goes in the next release: use --predictions "
            f"{given / PREDICTIONS}",
            file=sys.stderr,
        )
        return given / PREDICTIONS
    return given


def print_task_metrics(metrics: dict, out: Path) -> None:
    """What ``evaluate`` prints for a multilabel, survival or regression run."""
    from wsi_mil.cli.train import _fmt

    task, unit = metrics["task"], metrics["unit"]
    suffix = "_patient" if unit == "patients" else ""
    head = f"{metrics['n_slides']} {unit}"
    if task == "multilabel":
        print(
            f"{head}: macro AUC {_fmt(metrics['macro_auc'], metrics['macro_auc_ci95'])}, "
            f"Hamming loss {metrics['hamming_loss']:.3f}, subset accuracy "
            f"{metrics['subset_accuracy']:.3f} (each target at the threshold of the fold "
            f"that predicted the slide)"
        )
        # the recorded thresholds: one "t1;t2;..." per fold, a value per target
        cuts = [[float(v) for v in str(t).split(";")] for t in metrics["thresholds"]]
        for j, (target, m) in enumerate(metrics["per_target"].items()):
            at = sorted({round(c[j], 3) for c in cuts if len(c) > j})
            print(
                f"  {target}: AUC {_fmt(m['auc'], m['auc_ci95'])}, sensitivity "
                f"{_fmt(m['sensitivity'])}, specificity {_fmt(m['specificity'])} "
                f"(threshold{'s' if len(at) > 1 else ''} {', '.join(f'{v:.3f}' for v in at)})"
            )
        picture = f"roc{suffix}.png"
    elif task == "survival":
        print(
            f"{head}, {metrics['n_events']} events: Harrell's C "
            f"{_fmt(metrics['harrell_c'], metrics['harrell_c_ci95'])}, Uno's C "
            f"{_fmt(metrics['uno_c'], metrics['uno_c_ci95'])}"
        )
        print(
            f"time-dependent AUC {_fmt(metrics['td_auc_mean'], metrics['td_auc_mean_ci95'])} "
            f"(mean over times {', '.join(f'{t:.3g}' for t in metrics['td_auc_times'])}); "
            f"integrated Brier score "
            f"{_fmt(metrics['integrated_brier'], metrics['integrated_brier_ci95'])}"
        )
        logrank = metrics.get("logrank")
        if logrank:
            groups = ", ".join(f"{g} {k}" for g, k in logrank["groups"].items())
            print(f"risk groups ({groups}) at the run's cuts: log-rank p {logrank['p_value']:.3g}")
        picture = f"km_risk_groups{suffix}.png"
    else:
        print(
            f"{head}: R² {_fmt(metrics['r2'], metrics['r2_ci95'])}, MAE "
            f"{_fmt(metrics['mae'], metrics['mae_ci95'])}, RMSE "
            f"{_fmt(metrics['rmse'], metrics['rmse_ci95'])}"
        )
        print(
            f"Pearson r {_fmt(metrics['pearson_r'], metrics['pearson_r_ci95'])}, Spearman r "
            f"{_fmt(metrics['spearman_r'], metrics['spearman_r_ci95'])}"
        )
        picture = f"scatter{suffix}.png"
    if metrics["in_sample_slides"]:
        print(
            f"IN-SAMPLE: {len(metrics['in_sample_slides'])} slides were predicted by a model "
            f"that trained on them",
            file=sys.stderr,
        )
    print(f"written to {out}: metrics{suffix}.json, {picture}")
