"""``wsi-mil evaluate``: slide metrics of a predictions folder against a labels CSV.

Writes ``metrics.json`` (AUC with bootstrap 95 % CI, accuracy, balanced accuracy, F1, confusion
matrix, ROC points), ``roc.png`` and ``confusion_matrix.png``. Predicted labels are taken as the
predictions file states them (decided with the run's validation threshold): evaluation never
re-tunes a threshold on the slides it scores.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="slide metrics, ROC curve and confusion matrix of predictions",
        description="Compare predictions.csv (from predict) with a labels CSV.",
    )
    p.add_argument("--predictions", required=True, type=Path,
                   help="output folder of predict (holding predictions.csv)")
    p.add_argument("--labels", required=True, type=Path, help="labels CSV slide_id,label,...")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write metrics.json and the PNGs (default: --predictions)")
    p.add_argument("--negative-class", default=None,
                   help="negative class (default: as recorded by the run, else first sorted)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the "
                   "AUC confidence interval")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.evaluate import evaluate_predictions

    metrics = evaluate_predictions(args.predictions, args.labels, args.out,
                                   args.negative_class, args.bootstrap)
    auc, ci = metrics["auc"], metrics["auc_ci95"]
    auc_text = "n/a" if auc is None else f"{auc:.3f}"
    if ci is not None:
        auc_text += f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    print(f"{metrics['n_slides']} slides: AUC {auc_text}, accuracy {metrics['accuracy']:.3f}, "
          f"F1 {metrics['f1']:.3f}")
    print(f"written to {args.out or args.predictions}: metrics.json, roc.png, "
          f"confusion_matrix.png")
    return 0
