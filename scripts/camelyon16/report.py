"""The Camelyon16 benchmark report: ``OUT/report.md`` with plots, from ``OUT/results.json``.

A markdown table of the test metrics over seeds (mean ± std, and each seed): slide AUC with its
bootstrap 95 % interval, accuracy and balanced accuracy at the validation-chosen threshold,
lesion-level FROC, tile Dice / IoU / Hausdorff distance, attention mass on lesion, pointing
game, deletion and insertion AUC next to their random-order baselines; ROC, FROC and
perturbation-curve plots; the heatmaps of the chosen slides; the time and disk of each stage.

    python scripts/camelyon16/report.py OUT
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tiling.storage import atomic_output, write_text_atomic

#: (label, getter on one seed's results, decimals)
ROWS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("Test AUC", ("slide", "auc"), 3),
    ("Accuracy (validation threshold)", ("slide", "accuracy"), 3),
    ("Balanced accuracy", ("slide", "balanced_accuracy"), 3),
    ("Sensitivity at 90 % specificity", ("slide", "sensitivity_at_90_specificity"), 3),
    ("Sensitivity at 95 % specificity", ("slide", "sensitivity_at_95_specificity"), 3),
    ("False-negative rate (threshold)", ("slide", "false_negative_rate"), 3),
    ("FROC (Camelyon16 score)", ("lesion", "froc"), 3),
    ("Tile Dice (tumour slides)", ("lesion", "segmentation", "dice"), 3),
    ("Tile IoU", ("lesion", "segmentation", "iou"), 3),
    ("Tile sensitivity", ("lesion", "segmentation", "sensitivity"), 3),
    ("Tile specificity (normal slides)", ("lesion", "segmentation", "normal_tile_specificity"), 3),
    ("Hausdorff distance, boundaries (µm)", ("lesion", "segmentation", "hausdorff_um"), 0),
    ("  HD95 (µm)", ("lesion", "segmentation", "hd95_um"), 0),
    ("Attention mass on lesion", ("lesion", "explain", "attention_mass"), 3),
    ("  uniform attention", ("lesion", "explain", "attention_mass_uniform"), 3),
    ("Pointing game (top-1 in lesion)", ("lesion", "explain", "pointing_game"), 3),
    ("  chance", ("lesion", "explain", "pointing_game_chance"), 3),
    ("Pointing game top-k hit", ("lesion", "explain", "pointing_hit_at_k"), 3),
    ("Deletion AUC (lower is better)", ("lesion", "explain", "deletion_auc"), 3),
    ("  random order", ("lesion", "explain", "deletion_auc_random"), 3),
    ("Insertion AUC (higher is better)", ("lesion", "explain", "insertion_auc"), 3),
    ("  random order", ("lesion", "explain", "insertion_auc_random"), 3),
    ("Weakly supervised head (slide labels only): test AUC", ("weak", "slide", "auc"), 3),
    ("  FROC", ("weak", "lesion", "froc"), 3),
    ("  tile Dice (tumour slides)", ("weak", "lesion", "segmentation", "dice"), 3),
    (
        "  tile specificity (normal slides)",
        ("weak", "lesion", "segmentation", "normal_tile_specificity"),
        3,
    ),
    ("  pointing game", ("weak", "lesion", "explain", "pointing_game"), 3),
    ("Pixel segmenter in the flagged tiles: pixel Dice", ("pixel", "mask", "dice"), 3),
    ("  tile head on the same pixels: Dice", ("pixel", "tile_head", "dice"), 3),
    ("  pixel Hausdorff, boundaries (µm)", ("pixel", "mask", "hausdorff_um"), 0),
    ("  pixel HD95 (µm)", ("pixel", "mask", "hd95_um"), 0),
    ("  lesion FROC of the pixel masks", ("pixel", "froc"), 3),
)


def pick(data: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if not isinstance(data, dict) or data.get(key) is None:
            return None
        data = data[key]
    value = float(data)
    return None if math.isnan(value) else value


def fmt(values: list[float | None], decimals: int) -> tuple[str, list[str]]:
    """``mean ± std`` over seeds (std with n - 1), and each seed."""
    each = ["–" if v is None else f"{v:.{decimals}f}" for v in values]
    known = [v for v in values if v is not None]
    if not known:
        return "–", each
    mean = float(np.mean(known))
    std = float(np.std(known, ddof=1)) if len(known) > 1 else 0.0
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}", each


def save(fig, path: Path) -> str:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path.name


def plots(out: Path, results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = []
    seeds = results["seeds"]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for seed, data in seeds.items():
        for curve in data["slide"].get("roc", {}).values():
            ax.plot(
                curve["fpr"], curve["tpr"], label=f"seed {seed} (AUC {data['slide']['auc']:.3f})"
            )
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Test ROC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    names.append(save(fig, out / "report_roc.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.8, 4))
    for seed, data in seeds.items():
        path = Path(data["test_dir"]) / "lesions" / "froc_curve.csv"
        if path.is_file():
            with path.open() as f:
                rows = list(csv.DictReader(f))
            fps = [float(r["fps_per_slide"]) for r in rows]
            sens = [float(r["sensitivity"]) for r in rows]
            ax.step(
                fps, sens, where="post", label=f"seed {seed} (FROC {data['lesion']['froc']:.3f})"
            )
    ax.set_xscale("symlog", linthresh=0.25)
    for rate in (0.25, 0.5, 1, 2, 4, 8):
        ax.axvline(rate, color="grey", lw=0.5, ls=":")
    ax.set(
        xlabel="mean false positives per slide",
        ylabel="lesion sensitivity",
        title="FROC (ITC excluded)",
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    names.append(save(fig, out / "report_froc.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    drawn = False
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for seed, data in seeds.items():
            path = Path(data["test_dir"]) / "lesions" / "perturbation_curves.json"
            curves = json.loads(path.read_text()) if path.is_file() else {}
            if kind in curves:
                drawn = True
                c = curves[kind]
                (line,) = ax.plot(c["fractions"], c["scores"], label=f"seed {seed}: attention")
                ax.plot(
                    c["fractions"],
                    c["random_scores"],
                    ls="--",
                    color=line.get_color(),
                    label=f"seed {seed}: random",
                )
        ax.set(
            xlabel=f"share of tiles {'removed' if kind == 'deletion' else 'added'}",
            ylabel="tumour probability",
            title=kind.capitalize(),
            ylim=(-0.02, 1.02),
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    if drawn:
        names.append(save(fig, out / "report_perturbation.png"))
    plt.close(fig)
    return names


def write_report(out: Path) -> Path:
    """Write ``out/report.md`` (and its PNGs) from ``out/results.json``."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    seeds = results["seeds"]
    protocol = results["protocol"]
    lines = [
        "# Camelyon16 benchmark"
        + (" — dry run on a synthetic cohort" if "dry_run" in results else ""),
        "",
    ]
    if "dry_run" in results:
        lines += [
            (
                f"Synthetic Camelyon-shaped cohort (`wsi_mil.synthetic.cohort`, "
                f"{results['dry_run']['size_px']} px slides at {results['dry_run']['mpp']} "
                f"µm/px): the numbers test the protocol, not a model of real metastases."
            ),
            "",
        ]
    lines += [
        (
            f"Encoder `{protocol['encoder']}`, tiles of {protocol['tile_size']} px at "
            f"{protocol['target_mpp']} µm/px; {results['n_train']} training slides, "
            f"{results['n_test']} test slides; model `{results['selected_model']}` selected by "
            f"{protocol['folds']}-fold cross-validated AUC among {protocol['models']} "
            f"(CV AUC per seed: {json.dumps(results['cv_auc'])}); test predictions by each seed's "
            f"{protocol['folds']}-fold ensemble. The rows above the last block are the model whose "
            f"segmentation head was trained on the annotations' tile labels (annotation-"
            f"supervised); the last block is the same model trained on slide labels only "
            f"(weakly supervised head), then the pixel segmenter (trained on the training slides' "
            f"lesion outlines) inside the tiles the annotation-supervised model flags, scored "
            f"beside that model's tile head on the same pixels."
        ),
        "",
        "| metric | mean ± std over seeds | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    for label, keys, decimals in ROWS:
        summary, each = fmt([pick(data, keys) for data in seeds.values()], decimals)
        lines.append(f"| {label} | {summary} | " + " | ".join(each) + " |")
    cis = [data["slide"].get("auc_ci95") for data in seeds.values()]
    lines += [
        "",
        "Test AUC bootstrap 95 % interval per seed: "
        + ", ".join(
            f"seed {s}: " + ("–" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]")
            for s, ci in zip(seeds, cis)
        )
        + ".",
    ]
    first = next(iter(seeds.values()))["lesion"]
    lines += [
        (
            f"Lesion level: {first.get('n_lesions')} lesions to find, {first.get('n_itc')} "
            f"isolated-tumour-cell lesions excluded (official Camelyon16 rules); pointing "
            f"game top-k with k = {first['explain']['pointing_k']}."
        ),
        "",
    ]
    for name in plots(out, results):
        lines.append(f"![{name}]({name})")
    lines.append("")
    if results.get("heatmaps"):
        lines += ["## Heatmaps (first seed)", ""]
        for slide_id in results["heatmaps"]:
            overlay = out / "heatmaps" / slide_id / "overlay.png"
            if overlay.is_file():
                lines.append(f"![{slide_id}]({overlay.relative_to(out).as_posix()})")
        lines.append("")
    lines += [
        "## Runtime and disk (measured on this run)",
        "",
        f"{results.get('cpu_count')} CPU cores, device `{protocol['device']}`.",
        "",
        "| stage | seconds | output size (MB) |",
        "|---|---|---|",
    ]
    for stage, record in results["stages"].items():
        lines.append(f"| {stage} | {record['seconds']:.1f} | {record['bytes'] / 1e6:.1f} |")
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder of run.py (holds results.json)")
    args = parser.parse_args(argv)
    print(write_report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
