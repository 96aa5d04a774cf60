"""``wsi-mil train`` with its defaults on the classic MIL sets, against Ilse et al. 2018.

What a user gets: each Corel set (Fox, Tiger, Elephant; ``../shared/data/mil``) is written as a
folder of wsi-mil feature bags (float32, features as given) and a labels CSV, and trained with
the command line exactly as a user runs it, ``wsi-mil train --features ... --labels ...
--out ... --folds 10 --seed S``, no other flag (``--extra`` adds flags, to measure a variant).
The figure per set is the mean over seeds of the 10 folds' mean test accuracy at the run's own
per-fold thresholds (``summary.json``: ``accuracy.mean``), the statistic of Ilse et al.'s
Table 1 (5 runs of 10-fold CV); the AUC and the pooled out-of-fold accuracy are printed beside
it. ``scripts/bench_mil_classic.py`` runs the same sets under MI-Net's fixed protocol (no
validation, last of 50 epochs) with batched networks; this script measures the library's
defaults, validation split, epoch choice and thresholds included.

    python scripts/bench_train_defaults.py [--seeds 5] [--datasets fox tiger elephant]
        [--extra "--dropout 0.5"] [--workdir /tmp/wsi_mil_defaults] [--json out.json]
        [--jobs 15]

Timing is printed per run; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_mil_classic import DATA, PUBLISHED, load_mil_dataset

MODEL = "gated_abmil"  # the library's default model


def write_dataset(name: str, root: Path) -> tuple[Path, Path]:
    """``root/<name>/features/corel/*.h5`` and ``labels.csv`` (``neg``/``pos``) of one set."""
    from features.bag import write_bag
    from tiling.storage import write_text_atomic
    from wsi_mil.synthetic.bags import tiles_for

    features_dir = root / name / "features" / "corel"
    labels_csv = root / name / "labels.csv"
    if labels_csv.is_file():  # written before (a carried workdir needs no ../shared/data)
        return features_dir, labels_csv
    bags, labels = load_mil_dataset(DATA / f"{name}.data")
    rows = ["slide_id,label"]
    for i, (bag, label) in enumerate(zip(bags, labels)):
        slide_id = f"{name}_bag{i:03d}"
        attrs = {
            "encoder": "corel",
            "encoder_dim": bag.shape[1],
            "weights": "none",
            "weights_sha256": "",
            "input_size": 0,
            "mean": [0.0],
            "std": [1.0],
            "dtype": "float32",
        }
        write_bag(
            features_dir / f"{slide_id}.h5",
            bag.astype(np.float32),
            tiles_for(slide_id, len(bag)),
            attrs,
        )
        rows.append(f"{slide_id},{'pos' if label else 'neg'}")
    write_text_atomic(labels_csv, "\n".join(rows) + "\n")
    return features_dir, labels_csv


def train(
    features_dir: Path, labels_csv: Path, out: Path, seed: int, folds: int, extra: list[str]
) -> dict:
    """Run ``wsi-mil train`` as a user would; the run's ``summary.json``."""
    command = [
        sys.executable,
        "-m",
        "wsi_mil",
        "train",
        "--features",
        str(features_dir),
        "--labels",
        str(labels_csv),
        "--run",
        str(out),
        "--folds",
        str(folds),
        "--seed",
        str(seed),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["fox", "tiger", "elephant"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1, help="runs (set x seed) trained at once")
    parser.add_argument("--extra", default="", help="flags added to every wsi-mil train")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_defaults"))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    extra = shlex.split(args.extra)
    tag = "defaults" if not extra else "_".join(a.lstrip("-") for a in extra)
    results = {}
    print(
        f"wsi-mil train {'(defaults)' if not extra else args.extra}: {args.folds}-fold CV, "
        f"{args.seeds} seed(s), model {MODEL}"
    )
    data = {name: write_dataset(name, args.workdir) for name in args.datasets}

    def timed(name: str, seed: int) -> tuple[dict, float]:
        start = time.perf_counter()
        summary = train(
            *data[name], args.workdir / name / f"run_{tag}_s{seed}", seed, args.folds, extra
        )
        return summary, time.perf_counter() - start

    # --jobs trains runs side by side (each a single-threaded process): on a many-core machine
    # every set and seed at once
    pairs = [(name, seed) for name in args.datasets for seed in range(args.seeds)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = dict(zip(pairs, pool.map(lambda pair: timed(*pair), pairs)))
    for name in args.datasets:
        acc, auc, pooled, seconds = [], [], [], []
        for seed in range(args.seeds):
            summary, took = done[name, seed]
            seconds.append(took)
            acc.append(summary["accuracy"]["mean"])
            auc.append(summary["auc"]["mean"])
            pooled.append(summary["pooled_out_of_fold"]["accuracy"])
            print(
                f"  {name} seed {seed}: accuracy {acc[-1]:.3f}, AUC {auc[-1]:.3f}, pooled "
                f"out-of-fold accuracy {pooled[-1]:.3f} ({seconds[-1]:.0f} s)",
                flush=True,
            )
        mean, sem = PUBLISHED[name][MODEL]
        sd = float(np.std(acc, ddof=1)) if len(acc) > 1 else float("nan")
        results[name] = {
            "accuracy": float(np.mean(acc)),
            "accuracy_sd_over_seeds": sd,
            "auc": float(np.mean(auc)),
            "pooled_accuracy": float(np.mean(pooled)),
            "published": mean,
            "published_sem": sem,
            "within_one_sem": bool(np.mean(acc) >= mean - sem),
            "seconds_per_run": float(np.mean(seconds)),
            "per_seed": acc,
        }
        print(
            f"{name}: accuracy {np.mean(acc):.3f} (sd {sd:.3f} over {len(acc)} seeds), AUC "
            f"{np.mean(auc):.3f}; published {mean:.3f} ± {sem:.3f}: "
            f"{'within' if results[name]['within_one_sem'] else 'below'} one SEM "
            f"(bound {mean - sem:.3f})",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"extra": args.extra, "results": results}, indent=2))


if __name__ == "__main__":
    main()
