"""``wsi-mil train``: fit MIL models on feature bags and slide labels (cross-validated).

The flags are the fields of :class:`~wsi_mil.mil.params.TrainParams` (the ``train`` config
section); the work is :func:`wsi_mil.mil.train.train_run`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.mil.params import TrainParams


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train attention-MIL on feature bags and a labels CSV",
        description="Train a MIL model per fold (stratified group k-fold on patient_id, or the "
        "labels CSV's split column) and write runs/<name>/: config.yaml, splits.csv, "
        "fold_<k>/{model.pt,model.json,metrics.json,log.csv}, summary.json.",
    )
    p.add_argument("--features", required=True, type=Path,
                   help="folder of feature bags of one encoder (features/<encoder>/)")
    p.add_argument("--labels", required=True, type=Path,
                   help="CSV slide_id,label[,patient_id][,split]")
    p.add_argument("--out", required=True, type=Path, help="run folder to write")
    add_options(p.add_argument_group("training"), TrainParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.mil.train import train_run

    params = options_from_args(TrainParams, args)
    summary = train_run(args.features, args.labels, args.out, params)
    n = summary["n_folds"]
    for name in ("auc", "accuracy", "balanced_accuracy", "f1", "brier", "ece"):
        value = summary[name]
        if value["mean"] is None:
            continue
        spread = f" ± {value['std']:.3f} (sd)" if value["std"] is not None else ""
        print(f"{name}: {value['mean']:.3f}{spread} over {n} fold(s), test slides")
    pooled = summary.get("pooled_out_of_fold")
    if pooled is not None:
        auc = "n/a" if pooled["auc"] is None else f"{pooled['auc']:.3f}"
        print(f"pooled out of fold ({pooled['n_slides']} slides, each fold's threshold): AUC "
              f"{auc}, accuracy {pooled['accuracy']:.3f}, Brier {pooled['brier']:.3f}, ECE "
              f"{pooled['ece']:.3f}")
    print(f"threshold for new slides (the ensemble of {n} fold(s)): "
          f"{summary['ensemble_threshold']:.3f} ({summary['ensemble_threshold_rule']})")
    print(f"run written to {args.out}")
    print(json.dumps({"summary": str(args.out / "summary.json")}))
    return 0
