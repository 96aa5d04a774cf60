"""``wsi-mil train``: fit MIL models on feature bags and slide labels (cross-validated)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: CLI option -> TrainParams field, for the options that map one to one.
_OPTIONS: dict[str, tuple[type, str]] = {
    "model": (str, "MIL model (registry name; default gated_abmil)"),
    "folds": (int, "cross-validation folds, grouped by patient_id (default 5)"),
    "epochs": (int, "maximum epochs per fold (default 50)"),
    "lr": (float, "learning rate (default 2e-4)"),
    "weight_decay": (float, "weight decay (default 1e-4)"),
    "seed": (int, "random seed (default 0)"),
    "batch_size": (int, "bags per step (default 1)"),
    "patience": (int, "early-stopping patience in epochs (default 10)"),
    "dropout": (float, "dropout (default 0.25)"),
    "attention_dim": (int, "attention width (default 256)"),
    "schedule": (str, "cosine | plateau | none (default cosine)"),
    "negative_class": (str, "class whose slides are all-negative (default: first sorted)"),
    "max_train_tiles": (int, "random tiles per training bag per step (default: all)"),
    "memory_gb": (float, "hold bags in memory when they fit this budget (default 8)"),
    "device": (str, "auto | cpu | cuda (default auto)"),
    "bootstrap": (int, "bootstrap resamples for the AUC 95%% CI (default 1000)"),
}


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
    for name, (kind, text) in _OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                       help=text)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=None,
                   help="widths of the tile embedding MLP (default 512)")
    p.set_defaults(func=run)


def train_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from wsi_mil.mil.train import params_from_dict, train_run

    values = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    if args.hidden_dims is not None:
        values["hidden_dims"] = tuple(args.hidden_dims)
    return train_run(args.features, args.labels, args.out, params_from_dict(values))


def run(args: argparse.Namespace) -> int:
    summary = train_from_args(args)
    headline = {k: summary[k] for k in ("auc", "accuracy", "balanced_accuracy", "f1")}
    for name, value in headline.items():
        if value["mean"] is not None:
            print(f"{name}: {value['mean']:.3f} ± {value['std']:.3f} over {summary['n_folds']} "
                  f"fold(s)")
    print(f"run written to {args.out}")
    print(json.dumps({"summary": str(args.out / "summary.json")}))
    return 0
