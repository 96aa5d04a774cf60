"""How the explanations are scored: one method's localisation on one slide
(:func:`slide_scores`), and the cohort outputs of the explain stage
(:func:`write_cohort_outputs`): ``cohort_table.csv`` / ``cohort_table.md`` (the trust report:
the methods ranked by sanity and faithfulness with localisation beside, the recommended method;
then method x metric, mean over the out-of-sample slides with a bootstrap 95 % CI),
``trust.json`` (the ranking, read by ``wsi-mil heatmap`` and ``wsi-mil view``) and
``cohort_scores.png`` (a bar chart). The per-slide batch is :mod:`wsi_mil.pipeline.explain`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tiling.storage import write_text_atomic
from wsi_mil.explain.params import METHOD_NAMES, ExplainParams
from wsi_mil.explain.store import EXPLANATIONS, read_explanations

TRUST = "trust.json"
#: the cohort table's metrics: (key in a slide's scores, column title), in table order.
METRICS = (
    ("srg", "faithfulness: LeRF − MoRF AUPC"),
    ("morf_aupc", "MoRF AUPC"),
    ("lerf_aupc", "LeRF AUPC"),
    ("random_aupc", "random-order AUPC"),
    ("sanity_spearman", "randomisation Spearman"),
    ("mprt_mean", "MPRT mean absolute Spearman"),
    ("lesion_mass", "lesion mass"),
    ("pointing", "pointing game"),
    ("energy_pointing", "energy pointing"),
    ("tile_auc", "tile AUC"),
    ("tile_ap", "tile AP"),
)


def slide_scores(
    scores: np.ndarray, lesion_fraction: np.ndarray | None, params: ExplainParams
) -> dict[str, float]:
    """One method's localisation scores on one slide (none without a lesion tile).

    Signed maps are read by their positive part (evidence for the class; see
    :data:`wsi_mil.explain.methods.SIGNED`) for the lesion mass and the energy pointing game;
    the pointing game and the tile ranking use the map's order, sign included.
    """
    from wsi_mil.metrics.explain import (
        energy_pointing_game,
        lesion_attention_mass,
        map_weights,
        partial_tiles,
        pointing_game,
        tile_ranking,
    )

    out: dict[str, float] = {}
    if lesion_fraction is None or not (lesion_fraction >= params.min_fraction).any():
        return out
    weights = map_weights(scores)
    out["lesion_mass"] = (
        lesion_attention_mass(weights, lesion_fraction).mass if weights.sum() > 0 else float("nan")
    )
    out["lesion_mass_uniform"] = float(np.mean(lesion_fraction))
    partial = params.exclude_partial
    out["pointing"] = float(
        pointing_game(scores, lesion_fraction, params.pointing_k, params.min_fraction, partial).hit
    )
    out["energy_pointing"] = energy_pointing_game(
        weights, lesion_fraction, params.min_fraction, partial
    )
    ranking = tile_ranking(scores, lesion_fraction, params.min_fraction, partial)
    out["tile_auc"], out["tile_ap"] = ranking.auc, ranking.average_precision
    out["tile_prevalence"] = ranking.prevalence
    out["partial_tiles_left_out"] = float(
        partial_tiles(lesion_fraction, params.min_fraction).sum() if partial else 0
    )
    return out


def cohort_table(
    slide_scores_list: list[dict[str, dict[str, float]]], n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """Rows ``method, metric, mean, low, high, n`` over slides (bootstrap 95 % CI)."""
    from wsi_mil.metrics.explain import bootstrap_mean

    methods = [m for m in METHOD_NAMES if any(m in s for s in slide_scores_list)]
    rows = []
    for method in methods:
        for key, _ in METRICS + (
            ("sanity_flagged", "flagged"),
            ("partial_tiles_left_out", "partial tiles left out"),
        ):
            values = np.array(
                [s[method].get(key, np.nan) for s in slide_scores_list if method in s],
                dtype=np.float64,
            )
            ci = bootstrap_mean(values, n_boot, seed)
            if ci.n:
                rows.append(
                    {
                        "method": method,
                        "metric": key,
                        "mean": ci.mean,
                        "low": ci.low,
                        "high": ci.high,
                        "n": ci.n,
                    }
                )
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """Method x metric as a Markdown table: ``mean [low, high]``, and each metric's n."""
    keys = [k for k, _ in METRICS if any(r["metric"] == k for r in rows)]
    titles = dict(METRICS)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["metric"]): r for r in rows}
    lines = [
        "| method | " + " | ".join(titles[k] for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for method in methods:
        cells = []
        for key in keys:
            r = cell.get((method, key))
            cells.append("" if r is None else f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
        flagged = cell.get((method, "sanity_flagged"))
        name = method + (" (flagged)" if flagged and flagged["mean"] >= 0.5 else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = {k: max((r["n"] for r in rows if r["metric"] == k), default=0) for k in keys}
    lines.append("")
    lines.append("n (slides) per column: " + ", ".join(f"{titles[k]} {counts[k]}" for k in keys))
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["method", "metric", "mean", "low", "high", "n"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _header(
    models: list[str],
    n_total: int,
    n_scored: int,
    in_sample: list[str],
    n_lesion: int,
    partial: float,
    params: ExplainParams,
) -> str:
    how = (
        f"fold {params.fold} for every slide"
        if params.fold is not None
        else f"out of fold (each slide by the fold that held it out; fallback fold "
        f"{params.fallback_fold} where none did)"
    )
    left = (
        f"{len(in_sample)} in sample (the explaining fold trained or validated on them) "
        f"are left out: {', '.join(in_sample[:10])}{' ...' if len(in_sample) > 10 else ''}"
        if in_sample
        else "none was in sample"
    )
    partial_note = (
        f"{partial:.0f} partial-lesion tiles (0 < lesion fraction < "
        f"{params.min_fraction:g}) left out of tile AUC/AP and the pointing games"
        if params.exclude_partial
        else "partial-lesion tiles count as negatives (exclude_partial off)"
    )
    return (
        f"# Explanations of {', '.join(models) or 'no model'}\n\n"
        f"Explained {how}: {n_total} slides, {n_scored} out of sample and scored here; "
        f"{left}. Faithfulness (patch flipping, {params.flip_steps} steps, "
        f"{params.flip_random} random orders) and sanity over the {n_scored} out-of-sample "
        f"slides; localisation over the {n_lesion} of them with a lesion tile "
        f"(lesion fraction >= {params.min_fraction:g}); {partial_note}.\n\n"
    )


def write_cohort_outputs(out_dir: Path, params: ExplainParams) -> list[dict[str, Any]]:
    """``cohort_table.csv``, ``cohort_table.md``, ``trust.json`` and ``cohort_scores.png``
    from every slide's explanations in ``out_dir``, out-of-sample slides only."""
    from wsi_mil.explain.trust import most_faithful, rank_methods, ranking_markdown, recommended

    per_slide: list[dict[str, dict[str, float]]] = []  # each slide's scores, by method
    in_sample: list[str] = []
    models: set[str] = set()
    n_total = 0
    for path in sorted(out_dir.glob(f"*/{EXPLANATIONS}")):
        try:
            attrs = read_explanations(path).attrs
        except (OSError, ValueError, KeyError):
            continue
        n_total += 1
        models.add(str(attrs.get("model")))
        if bool(attrs.get("in_sample", False)):
            in_sample.append(path.parent.name)
        else:
            per_slide.append(attrs["scores"])
    rows = cohort_table(per_slide, params.bootstrap, params.seed)
    ranking = rank_methods(rows)
    best, faithful = recommended(ranking), most_faithful(ranking)
    n_lesion = max((r["n"] for r in rows if r["metric"] == "pointing"), default=0)
    # the same count under every method of a slide: read it from the first
    partial = sum(next(iter(s.values()), {}).get("partial_tiles_left_out", 0.0) for s in per_slide)
    header = _header(sorted(models), n_total, len(per_slide), in_sample, n_lesion, partial, params)
    report = (
        "## Trust report\n\n"
        + (
            f"Recommended method: **{best}** (the most faithful of the methods that pass the "
            "sanity check; ranked by sanity, then faithfulness, localisation beside).\n\n"
            if best
            else "Every method fails the sanity check (flagged on half the slides "
            "or more): no recommendation. The most faithful is "
            f"**{faithful}**, but its maps depend on the data about as much as on the "
            "trained weights (read the sanity columns).\n\n"
        )
        + ranking_markdown(ranking)
        if rows
        else "No out-of-sample slide to score.\n"
    )
    write_text_atomic(out_dir / "cohort_table.csv", _csv_text(rows))
    write_text_atomic(
        out_dir / "cohort_table.md", header + report + "\n## All scores\n\n" + table_markdown(rows)
    )
    write_text_atomic(
        out_dir / TRUST,
        json.dumps(
            {
                "models": sorted(models),
                "recommended": best,
                "most_faithful": faithful,
                "ranking": ranking,
                "slides": n_total,
                "scored": len(per_slide),
                "in_sample_left_out": in_sample,
                "with_lesion": n_lesion,
            },
            indent=2,
        ),
    )
    if rows:
        from wsi_mil.explain.figures import write_cohort_chart

        write_cohort_chart(
            out_dir / "cohort_scores.png",
            rows,
            [k for k, _ in METRICS if k != "random_aupc"],
            dict(METRICS),
        )
    return rows
