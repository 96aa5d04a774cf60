"""Why ``wsi-mil train``'s defaults trail the benchmark protocol: training settings and epoch
rules screened on the classic MIL sets, each fold trained once.

Every fold of 10-fold CV is trained for ``epochs`` with the library's own pieces (``make_splits``
with its validation carve, ``run_epoch`` with the class-weighted slide loss, ``make_optimizer``,
the cosine schedule) and its validation and test slides are scored after *every* epoch, so
several epoch rules come from one training: ``last`` (the benchmark protocol's rule, MI-Net's
last of 50 epochs), ``val_loss_from_5`` and ``val_loss_from_20`` (the lowest validation slide
loss from that epoch on; 20 is the default ``min_epochs``) and ``val_auc_from_20``. The figure
is the mean over folds of the test accuracy at 0.5, the statistic of Ilse et al.'s Table 1.
``scripts/bench_train_defaults.py`` measures the CLI as a user runs it; this script is the
screen that chose what to change (README, "Classic MIL benchmarks").

    python scripts/bench_train_rules.py tiger elephant [--set optimizer=adam lr=5e-4] [--seed 0]

Timing is printed; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_train_defaults import write_dataset

RULES = ("last", "val_loss_from_5", "val_loss_from_20", "val_auc_from_20")


def parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs typed as the ``TrainParams`` field's default is."""
    from wsi_mil.mil.params import TrainParams

    defaults = {f.name: getattr(TrainParams(), f.name) for f in dataclasses.fields(TrainParams)}
    out = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        default = defaults[key]
        if isinstance(default, bool):
            out[key] = value == "true"
        elif isinstance(default, tuple):
            out[key] = tuple(int(v) for v in value.split(","))
        else:
            out[key] = type(default)(value)
    return out


def screen(name: str, overrides: dict, seed: int, workdir: Path) -> dict[str, float]:
    """Mean test accuracy at 0.5 over the 10 folds of one set, under each epoch rule."""
    from wsi_mil.metrics.slide import slide_auc
    from wsi_mil.mil.bags import BagDataset, match_bags
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.mil.models import create_model
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.splits import make_splits
    from wsi_mil.mil.tasks import class_weights
    from wsi_mil.mil.train import make_optimizer, run_epoch, seed_everything

    params = TrainParams(device="cpu", seed=seed, folds=10, **overrides)
    features_dir, labels_csv = write_dataset(name, workdir)
    labels = read_labels(labels_csv)
    bags = match_bags(features_dir, labels)
    records = {r.slide_id: r for r in bags.records}
    device = torch.device("cpu")
    scores: dict[str, list[float]] = {rule: [] for rule in RULES}
    for split in make_splits(labels, params.folds, params.val_fraction, params.seed):
        seed_everything(params.seed + split.fold)
        train, val, test = (
            BagDataset([records[s] for s in ids], bags.dim)
            for ids in (split.train, split.val, split.test)
        )
        model = create_model(params.model, bags.dim, 2, **params.model_kwargs())
        weights = (
            class_weights([r.label for r in train.records], 2) if params.class_weighting else None
        )
        optimizer = make_optimizer(model.parameters(), params, fused=True)
        schedule = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs)
            if params.schedule == "cosine"
            else None
        )
        generator = torch.Generator().manual_seed(params.seed + split.fold)
        history = []  # per epoch: validation slide loss, validation AUC, test accuracy at 0.5
        for _ in range(params.epochs):
            run_epoch(model, train, params, 0, device, weights, optimizer, generator)
            if schedule is not None:
                schedule.step()
            v = run_epoch(model, val, params, 0, device, weights)
            t = run_epoch(model, test, params, 0, device, None)
            history.append(
                (
                    v.slide_loss,
                    slide_auc(v.y(), v.p(), 0) or 0.5,
                    float(np.mean((t.p()[:, 1] >= 0.5) == t.y())),
                )
            )
        h = np.array(history)
        scores["last"].append(h[-1, 2])
        scores["val_loss_from_5"].append(h[4 + np.argmin(h[4:, 0]), 2])
        scores["val_loss_from_20"].append(h[19 + np.argmin(h[19:, 0]), 2])
        scores["val_auc_from_20"].append(h[19 + np.argmax(h[19:, 1]), 2])
    return {rule: float(np.mean(v)) for rule, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", choices=["fox", "tiger", "elephant"])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="TrainParams fields changed from the defaults",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_defaults"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = parse_overrides(args.set)
    for name in args.datasets:
        start = time.perf_counter()
        result = screen(name, overrides, args.seed, args.workdir)
        print(
            f"{name} {' '.join(args.set) or 'defaults'} seed {args.seed}: "
            + ", ".join(f"{rule} {acc:.3f}" for rule, acc in result.items())
            + f" ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
