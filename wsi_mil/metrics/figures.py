"""The pictures of the survival, regression and multilabel metrics: Kaplan-Meier curves of the
predicted risk groups with the log-rank p-value, predicted against true values, and one ROC
curve per target. Each title says what is shown, how many slides, and what decided the groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def _save(fig: Any, path: Path) -> None:
    from tiling.storage import atomic_output

    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def plot_risk_groups(
    path: Path,
    time: np.ndarray,
    event: np.ndarray,
    groups: npt.ArrayLike,
    logrank: dict[str, Any] | None,
    note: str,
) -> None:
    """Kaplan-Meier curves (lifelines) of each predicted risk group with its 95 % band, the
    number at risk in the legend and the log-rank p-value in the title."""
    from matplotlib.figure import Figure

    from wsi_mil.metrics.survival import kaplan_meier_curves

    curves = kaplan_meier_curves(time, event, groups)
    fig = Figure(figsize=(6.0, 4.6))
    ax = fig.add_subplot()
    colours = {"high risk": "#c0392b", "low risk": "#2471a3"}
    groups = np.asarray(groups)
    for name, curve in curves.items():
        colour = colours.get(name)
        n = int((groups == name).sum())
        events = int(np.asarray(event)[groups == name].sum())
        ax.step(
            curve["time"],
            curve["survival"],
            where="post",
            color=colour,
            lw=2,
            label=f"{name} (n={n}, {events} events)",
        )
        ax.fill_between(
            curve["time"], curve["lower"], curve["upper"], step="post", color=colour, alpha=0.15
        )
    p = "n/a" if logrank is None else f"{logrank['p_value']:.3g}"
    ax.set(
        xlabel="time",
        ylabel="survival probability (Kaplan-Meier)",
        ylim=(0, 1.02),
        title=f"Predicted risk groups, log-rank p = {p}",
    )
    ax.legend(loc="lower left", fontsize=8)
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, color="#444444")
    fig.subplots_adjust(bottom=0.18)
    _save(fig, path)


def plot_scatter(
    path: Path,
    y: np.ndarray,
    predicted: np.ndarray,
    metrics: dict[str, Any],
    target: str,
    note: str,
) -> None:
    """Predicted against true values with the identity line; R², MAE and Pearson's r in the
    title."""
    from matplotlib.figure import Figure

    y, predicted = np.asarray(y, np.float64), np.asarray(predicted, np.float64)
    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_subplot()
    ax.scatter(y, predicted, s=18, alpha=0.7, color="#2471a3", edgecolor="none")
    low, high = float(min(y.min(), predicted.min())), float(max(y.max(), predicted.max()))
    ax.plot([low, high], [low, high], ls="--", color="grey", lw=1, label="predicted = true")

    def fmt(name: str) -> str:
        value = metrics.get(name)
        return "n/a" if value is None else f"{value:.3f}"

    ax.set(
        xlabel=f"true {target}",
        ylabel=f"predicted {target}",
        title=f"R² {fmt('r2')}, MAE {fmt('mae')}, Pearson r {fmt('pearson_r')}\n"
        f"{metrics['n_slides']} slides",
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, color="#444444")
    fig.subplots_adjust(bottom=0.14)
    _save(fig, path)


def plot_target_rocs(path: Path, metrics: dict[str, Any], note: str) -> None:
    """One ROC curve per multilabel target, its AUC in the legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_subplot()
    for name, curve in metrics["roc"].items():
        auc = metrics["per_target"][name]["auc"]
        ax.plot(curve["fpr"], curve["tpr"], lw=2, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    macro = metrics.get("macro_auc")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"ROC per target, macro AUC "
        f"{'n/a' if macro is None else f'{macro:.3f}'}\n"
        f"{metrics['n_slides']} slides",
    )
    if metrics["roc"]:
        ax.legend(loc="lower right", fontsize=8)
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, color="#444444")
    fig.subplots_adjust(bottom=0.14)
    _save(fig, path)
