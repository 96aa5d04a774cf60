"""Threshold rules compared on finished ``wsi-mil train`` runs, from their own records.

Every fold's ``training.json`` holds its validation and test probabilities, so the test
accuracy each fold would have had under another decision rule can be recomputed without
training again. The rules, all chosen on pooled validation predictions without the fold's test
slides (:func:`wsi_mil.mil.thresholds.fold_thresholds`):

- ``youden``: Youden's J on the pool (the rule before the nested check);
- ``half``: a fixed 0.5;
- ``nested``: the default, Youden's J only where the nested check on held-out validation folds
  finds it beats 0.5 (:func:`wsi_mil.mil.thresholds.nested_rule`).

The figure per run is the mean over folds of the test accuracy, as ``summary.json``'s
``accuracy.mean``; per set the mean over runs, and over the seeds named by ``--fresh`` alone.
Used on the runs of ``scripts/bench_train_defaults.py``:

    python scripts/bench_threshold_rules.py [--workdir /tmp/wsi_mil_defaults]
        [--datasets fox tiger elephant] [--tag defaults] [--fresh 3 4]

It only reads; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

from wsi_mil.metrics.slide import MIN_VAL_PER_CLASS
from wsi_mil.mil import thresholds

RULES = ("youden", "half", "nested")


def fold_records(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run.glob("fold_*/training.json"))]


def accuracies(
    run: Path, labels: dict[str, str], positive: str
) -> tuple[dict[str, float], dict[str, int]]:
    """Mean test accuracy over folds under each rule, and how often the nested check kept
    Youden's J or 0.5."""
    records = fold_records(run)

    def y(ids: list[str]) -> np.ndarray:
        return np.array([labels[s] == positive for s in ids], dtype=int)

    args = (
        [r["val"]["slide_ids"] for r in records],
        [y(r["val"]["slide_ids"]) for r in records],
        [np.asarray(r["val"]["probs"]) for r in records],
        [r["test"]["slide_ids"] for r in records],
        [r["fold"] for r in records],
        0,
    )
    chosen = {
        "youden": thresholds.fold_thresholds(
            *args, min_per_class=MIN_VAL_PER_CLASS, nested_check=False
        ),
        "half": thresholds.fold_thresholds(*args, min_per_class=10**9),
        "nested": thresholds.fold_thresholds(*args, min_per_class=MIN_VAL_PER_CLASS),
    }
    out = {}
    for rule in RULES:
        out[rule] = float(
            np.mean(
                [
                    np.mean(
                        (np.asarray(r["test"]["probs"])[:, 1] >= t.threshold)
                        == y(r["test"]["slide_ids"])
                    )
                    for r, t in zip(records, chosen[rule])
                ]
            )
        )
    kept = {
        "youden": sum(t.rule.startswith("Youden") for t in chosen["nested"]),
        "0.5": sum(not t.rule.startswith("Youden") for t in chosen["nested"]),
    }
    return out, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_defaults"))
    parser.add_argument("--datasets", nargs="+", default=["fox", "tiger", "elephant"])
    parser.add_argument("--tag", default="defaults", help="runs named run_<tag>_s<seed>")
    parser.add_argument(
        "--fresh", type=int, nargs="*", default=[], help="seeds to summarise on their own as well"
    )
    args = parser.parse_args()
    kept_total = {"youden": 0, "0.5": 0}
    print(
        "set | "
        + " | ".join(RULES)
        + (" | fresh seeds: " + " | ".join(RULES) if args.fresh else "")
    )
    for name in args.datasets:
        with (args.workdir / name / "labels.csv").open(newline="") as f:
            labels = {row["slide_id"]: row["label"] for row in csv.DictReader(f)}
        by_seed = {}
        for run in sorted((args.workdir / name).glob(f"run_{args.tag}_s*")):
            seed = int(re.search(r"_s(\d+)$", run.name).group(1))
            by_seed[seed], kept = accuracies(run, labels, "pos")
            for key in kept:
                kept_total[key] += kept[key]
            print(
                f"  {name} seed {seed}: " + ", ".join(f"{r} {by_seed[seed][r]:.3f}" for r in RULES)
            )
        mean = {r: np.mean([v[r] for v in by_seed.values()]) for r in RULES}
        fresh = (
            {r: np.mean([by_seed[s][r] for s in args.fresh if s in by_seed]) for r in RULES}
            if args.fresh
            else {}
        )
        print(
            f"{name} ({len(by_seed)} runs) | "
            + " | ".join(f"{mean[r]:.3f}" for r in RULES)
            + (" | " + " | ".join(f"{fresh[r]:.3f}" for r in RULES) if fresh else "")
        )
    print(
        f"nested check: Youden's J kept in {kept_total['youden']} fold thresholds, 0.5 in "
        f"{kept_total['0.5']}"
    )


if __name__ == "__main__":
    main()
