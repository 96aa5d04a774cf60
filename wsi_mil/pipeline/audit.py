"""The shortcut audit: does the cohort let a model learn the site instead of the disease?

Per slide, from its feature bag: the mean of its tile features; with a trained run, also the
run's attention-pooled embedding (fold 0's model: its attention weights over the tiles times
its tile embeddings, the vector its classifier reads) and its attention on each tile. Then:

1. **Site probe on mean features**: can a cross-validated logistic regression tell the site
   (a labels-CSV column) from the features alone? (:func:`wsi_mil.metrics.shortcut.site_probe`)
2. **Site probe on the run's embedding**: does what the trained model looks at carry the site?
3. **Site-label association**: does the site predict the label (Cramér's V)? A site signal is
   a shortcut risk only when the site goes with the label.
4. **Attention on artefacts**: the share of the run's attention on tiles that are mostly
   background, pen or out of focus (tile QC measured at extraction), against the share of
   such tiles: a model attending to glass or ink more than their share says something else
   than morphology drives it.

The verdict line names each finding; ``audit.json`` holds every number and ``audit.md`` the
same as a table. Probes on the run's embedding use slides the run trained on (in-sample): they
say what the representation carries, not how well a model generalises.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tiling.storage import provenance, write_text_atomic
from wsi_mil.errors import WsiMilError
from wsi_mil.metrics.params import AuditParams

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"


class AuditError(WsiMilError, ValueError):
    """A labels CSV or features folder the audit cannot use."""


def read_site_column(labels_csv: str | os.PathLike, column: str) -> dict[str, tuple[str, str]]:
    """``slide_id -> (label, site)`` from the labels CSV, with an error naming a missing column."""
    path = Path(labels_csv)
    if not path.is_file():
        raise AuditError(f"{path}: labels CSV not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        for needed in ("slide_id", "label", column):
            if needed not in header:
                raise AuditError(
                    f"{path}: no {needed!r} column (columns: {', '.join(header)}); "
                    f"--column names the site column"
                )
        rows = {}
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if row["slide_id"] and row[column]:
                rows[row["slide_id"]] = (row["label"], row[column])
    return rows


def _tile_flags(qc: np.ndarray, median_focus: float, params: AuditParams) -> np.ndarray:
    """Per tile: mostly background, mostly pen, or out of focus (any of them)."""
    focus, background, pen = qc[:, 0], qc[:, 1], qc[:, 2]
    blurred = (focus < params.blur * median_focus) & (background <= params.background)
    return (background > params.background) | (pen > params.pen) | blurred


def _run_outputs(
    run_dir: Path, bags: dict[str, Path], device: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """Per slide: fold 0's attention-pooled embedding and its attention over the tiles."""
    import torch

    from features.bag import read_bag_features
    from wsi_mil.mil.predict import load_run

    run = load_run(run_dir, fold=None, device=device)
    fold = run.folds[0]
    model = fold.model.eval()
    embeddings, attention = {}, {}
    with torch.no_grad():
        for slide_id, path in bags.items():
            x = torch.from_numpy(read_bag_features(path)).float().to(run.device)
            if x.shape[1] != run.in_dim:
                raise AuditError(
                    f"{path}: {x.shape[1]} features per tile, {run_dir} was trained on {run.in_dim}"
                )
            out = model(x)
            weights = out.attention[0]
            if hasattr(model, "embed"):  # the vector the classifier reads: weights x h
                h = model.embed(x.unsqueeze(0))[0]
                pooled = out.branch_attention[0].T.to(h.dtype) @ h
            else:  # a model without tile embeddings: attention-weighted tile features
                pooled = weights.unsqueeze(0) @ x
            embeddings[slide_id] = pooled.flatten().float().cpu().numpy()
            attention[slide_id] = weights.float().cpu().numpy()
    return embeddings, attention, f"fold {fold.fold} of {run_dir}"


def audit_cohort(
    features_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: AuditParams | None = None,
    run_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the audit (see the module docstring); write ``audit.json`` and ``audit.md`` in
    ``out_dir`` and return the report."""
    from features.bag import read_bag_attrs, read_bag_dataset, read_bag_features
    from wsi_mil.metrics.shortcut import flagged_share, label_association, site_probe
    from wsi_mil.mil.bags import find_bags

    params = params or AuditParams()
    rows = read_site_column(labels_csv, params.column)
    bags = {s: p for s, p in find_bags(features_dir).items() if s in rows}
    if len(bags) < 4:
        raise AuditError(
            f"{features_dir}: only {len(bags)} bag(s) match slides of "
            f"{labels_csv} with a {params.column!r}; the audit needs several"
        )
    ids = sorted(bags)
    sites = np.array([rows[s][1] for s in ids])
    labels = np.array([rows[s][0] for s in ids])
    means = np.stack([read_bag_features(bags[s]).astype(np.float64).mean(axis=0) for s in ids])
    report: dict[str, Any] = {
        "features": str(features_dir),
        "labels": str(labels_csv),
        "column": params.column,
        "slides": len(ids),
        "sites": {str(k): int(v) for k, v in zip(*np.unique(sites, return_counts=True))},
        "params": asdict(params),
        **provenance(),
    }
    probe = site_probe(means, sites, params.folds, params.permutations, params.seed)
    report["probe_mean_features"] = asdict(probe)
    association = label_association(sites, labels)
    report["site_label_association"] = asdict(association)

    flagged_tiles: dict[str, np.ndarray] = {}
    read = {s: read_bag_dataset(bags[s], "tile_qc") for s in ids}
    qcs = {s: q for s, q in read.items() if q is not None}
    if len(qcs) == len(read):
        tissue = np.concatenate([q[q[:, 1] <= params.background, 0] for q in qcs.values()])
        median_focus = float(np.median(tissue)) if len(tissue) else 0.0
        flagged_tiles = {s: _tile_flags(q, median_focus, params) for s, q in qcs.items()}
        report["tile_qc"] = {
            "median_focus": median_focus,
            "flagged_tile_share": float(np.mean(np.concatenate(list(flagged_tiles.values())))),
        }
    else:
        missing = [s for s, q in qcs.items() if q is None]
        report["tile_qc"] = {
            "missing": f"{len(missing)} bag(s) without tile QC (extracted "
            f"before it existed, or TRIDENT's): {', '.join(missing[:5])}"
        }

    if run_dir is not None:
        embeddings, attention, source = _run_outputs(Path(run_dir), bags, device)
        run_probe = site_probe(
            np.stack([embeddings[s] for s in ids]),
            sites,
            params.folds,
            params.permutations,
            params.seed,
        )
        report["probe_run_embedding"] = {**asdict(run_probe), "model": source, "in_sample": True}
        if flagged_tiles:
            shares = [flagged_share(attention[s], flagged_tiles[s]) for s in ids]
            tile_shares = [float(np.mean(flagged_tiles[s])) for s in ids]
            report["attention_on_flagged"] = {
                "mean_attention_share": float(np.mean(shares)),
                "mean_tile_share": float(np.mean(tile_shares)),
                "slides_over": int(
                    sum(
                        a > max(params.attention_ratio * t, 0.1)
                        for a, t in zip(shares, tile_shares)
                    )
                ),
            }
        report["encoder"] = str(read_bag_attrs(bags[ids[0]]).get("encoder", "?"))
    report["findings"], report["verdict"] = verdict(report, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / AUDIT_JSON, json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_dir / AUDIT_MD, audit_markdown(report))
    return report


def verdict(report: dict[str, Any], params: AuditParams) -> tuple[list[str], str]:
    """The findings, and one line: SHORTCUT RISK, CAUTION or PASS, with the reasons."""
    findings = []
    associated = (
        report["site_label_association"]["p_value"] < params.alpha
        and report["site_label_association"]["cramers_v"] >= params.min_cramers_v
    )
    for key, what in (
        ("probe_mean_features", "mean features"),
        ("probe_run_embedding", "the run's attention-pooled embedding"),
    ):
        probe = report.get(key)
        if probe and probe["p_value"] < params.alpha:
            findings.append(
                f"the site is predictable from {what} (balanced accuracy "
                f"{probe['balanced_accuracy']:.2f}, chance {probe['chance']:.2f}, "
                f"permutation p = {probe['p_value']:.3f})"
            )
    if associated:
        v = report["site_label_association"]
        findings.append(
            f"the site goes with the label (Cramér's V {v['cramers_v']:.2f}, "
            f"p = {v['p_value']:.3g})"
        )
    flagged = report.get("attention_on_flagged")
    if flagged and flagged["mean_attention_share"] > max(
        params.attention_ratio * flagged["mean_tile_share"], 0.1
    ):
        findings.append(
            f"attention favours background/pen/blurred tiles "
            f"({flagged['mean_attention_share']:.0%} of attention on "
            f"{flagged['mean_tile_share']:.0%} of tiles)"
        )
    site_signal = any(f.startswith("the site is predictable") for f in findings)
    if (site_signal and associated) or any(f.startswith("attention favours") for f in findings):
        line = "SHORTCUT RISK: " + "; ".join(findings)
    elif findings:
        line = (
            "CAUTION: "
            + "; ".join(findings)
            + (
                " (site information is present but does not go with the label)"
                if site_signal
                else " (the site goes with the label, but the features do not carry it detectably)"
            )
        )
    else:
        line = (
            f"PASS: the site ({report['column']}) is not predictable above chance and "
            f"attention does not favour artefacts"
        )
    return findings, line


def audit_markdown(report: dict[str, Any]) -> str:
    """``audit.md``: the verdict, then one row per check."""
    lines = [
        f"# Shortcut audit: {report['column']}",
        "",
        f"**{report['verdict']}**",
        "",
        f"{report['slides']} slides; sites: "
        + ", ".join(f"{k} ({v})" for k, v in report["sites"].items()),
        "",
        "| check | value | reference | p |",
        "|---|---|---|---|",
    ]
    for key, what in (
        ("probe_mean_features", "site probe, mean features"),
        ("probe_run_embedding", "site probe, run embedding (in-sample)"),
    ):
        probe = report.get(key)
        if probe:
            lines.append(
                f"| {what} ({probe['folds']}-fold, {probe['permutations']} "
                f"permutations) | balanced accuracy {probe['balanced_accuracy']:.3f} | "
                f"chance {probe['chance']:.3f} | {probe['p_value']:.3f} |"
            )
    v = report["site_label_association"]
    lines.append(f"| site vs label | Cramér's V {v['cramers_v']:.3f} | 0 | {v['p_value']:.3g} |")
    flagged = report.get("attention_on_flagged")
    if flagged:
        lines.append(
            f"| attention on background/pen/blurred tiles | "
            f"{flagged['mean_attention_share']:.3f} | tile share "
            f"{flagged['mean_tile_share']:.3f} | {flagged['slides_over']} slide(s) over |"
        )
    elif "missing" in report.get("tile_qc", {}):
        lines.append(
            f"| attention on artefacts | not measured | {report['tile_qc']['missing']} | |"
        )
    return "\n".join(lines) + "\n"
