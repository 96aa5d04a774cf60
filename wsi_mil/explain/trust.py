"""How far to trust each explanation method: the ranking of the cohort table and the figures
shown beside one slide's map (``wsi-mil heatmap``, ``wsi-mil view``, ``comparison.png``).

Three questions, in the order they rank the methods:

1. **Sanity** (Adebayo et al. 2018): does the map change when the model's weights are
   randomised? A method whose map correlates with the fully randomised model's at
   |Spearman| >= the threshold, or with the cascade's maps at a mean |Spearman| >= it, on
   half the slides or more *fails*: it describes the data as much as the model. It can still be
   the most faithful on paper, but it is ranked after every method that passes.
2. **Faithfulness** (xMIL's patch flipping, no annotation needed): removing the tiles the map
   ranks first should drop the prediction fast (low MoRF AUPC) and removing those it ranks
   last should not (high LeRF AUPC); ``LeRF - MoRF`` (xMIL's symmetric relevance gain) orders
   the methods that pass.
3. **Localisation** (only where lesions are annotated): tile AUC against the lesion tiles,
   shown beside the others. It breaks ties but does not rank: a model may rightly use tissue
   outside the annotated lesion, and a map that follows the lesion but not the model is not an
   explanation of the model.

``random`` is the baseline every figure is read against and is never recommended. Standard
library only (the viewer and the heatmap stage read it without torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: cohort-table metrics the ranking reads.
RANKED = (
    "srg",
    "morf_aupc",
    "lerf_aupc",
    "random_aupc",
    "sanity_spearman",
    "mprt_mean",
    "sanity_flagged",
    "tile_auc",
)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def rank_methods(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Cohort-table rows (``method, metric, mean, ...``) -> one entry per method, best first:
    ``method, rank, passes`` (True, False, or None when the sanity check was not run) and the
    cohort means of :data:`RANKED` (None where not computed)."""
    cell = {(r["method"], r["metric"]): _finite(r["mean"]) for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    entries = []
    for method in methods:
        entry: dict[str, Any] = {"method": method}
        entry.update({k: cell.get((method, k)) for k in RANKED})
        flagged = entry["sanity_flagged"]
        entry["passes"] = None if flagged is None else flagged < 0.5
        entries.append(entry)

    def key(e: dict[str, Any]) -> tuple:
        faith = e["srg"] if e["srg"] is not None else -math.inf
        local = e["tile_auc"] if e["tile_auc"] is not None else -math.inf
        return (e["method"] == "random", e["passes"] is False, -faith, -local)

    entries.sort(key=key)
    for rank, entry in enumerate(entries, 1):
        entry["rank"] = rank
    return entries


def recommended(ranking: Sequence[Mapping[str, Any]]) -> str | None:
    """The first ranked method that is not ``random`` and does not fail the sanity check."""
    for entry in ranking:
        if entry["method"] != "random" and entry["passes"] is not False:
            return str(entry["method"])
    return None


def most_faithful(ranking: Sequence[Mapping[str, Any]]) -> str | None:
    """The most faithful method that is not ``random``, whatever its sanity check."""
    scored = [e for e in ranking if e["method"] != "random" and e["srg"] is not None]
    return str(max(scored, key=lambda e: e["srg"])["method"]) if scored else None


def _fmt(value: Any, digits: int = 2) -> str:
    value = _finite(value)
    return "n/a" if value is None else f"{value:.{digits}f}"


def verdict(entry: Mapping[str, Any]) -> str:
    """``passes`` / ``FAILS the sanity check`` / ``baseline`` / ``sanity not run``."""
    if entry.get("method") == "random":
        return "baseline"
    if entry.get("passes") is None:
        return "sanity not run"
    return "passes" if entry["passes"] else "FAILS the sanity check"


def ranking_markdown(ranking: Sequence[Mapping[str, Any]]) -> str:
    """The trust report's table: rank, method, faithfulness, sanity, localisation, verdict."""
    lines = [
        (
            "| rank | method | faithfulness: LeRF − MoRF AUPC | MoRF / LeRF / random-order "
            "AUPC | sanity: Spearman with the randomised model | MPRT: mean absolute Spearman "
            "over the cascade | share of slides failing sanity | tile AUC | verdict |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in ranking:
        lines.append(
            f"| {e['rank']} | {e['method']} | {_fmt(e['srg'], 3)} | {_fmt(e['morf_aupc'], 3)} / "
            f"{_fmt(e['lerf_aupc'], 3)} / {_fmt(e['random_aupc'], 3)} | "
            f"{_fmt(e['sanity_spearman'])} | {_fmt(e['mprt_mean'])} | "
            f"{_fmt(e['sanity_flagged'])} | {_fmt(e['tile_auc'], 3)} | {verdict(e)} |"
        )
    return "\n".join(lines) + "\n"


def slide_trust(scores: Mapping[str, Any]) -> dict[str, Any]:
    """One method's figures on one slide (its entry of ``explanations.h5``'s ``scores``):
    ``srg, morf_aupc, lerf_aupc, random_aupc, sanity_spearman, mprt_mean, tile_auc`` (None
    where not computed) and ``passes`` (None when the sanity check was not run)."""
    out = {k: _finite(scores.get(k)) for k in RANKED if k != "sanity_flagged"}
    flagged = _finite(scores.get("sanity_flagged"))
    out["passes"] = None if flagged is None else flagged < 0.5
    return out


def trust_parts(method: str, scores: Mapping[str, Any]) -> list[str]:
    """A map's caption in parts: which method and its faithfulness on this slide, then its
    sanity check, e.g. ``lrp · faithfulness: LeRF − MoRF AUPC 0.31 (MoRF 0.42, LeRF 0.73,
    random order 0.60)`` and ``sanity: Spearman 0.08 with the randomised model, passes``."""
    t = slide_trust(scores)
    head = method
    if t["srg"] is not None:
        head += (
            f"  \u00b7  faithfulness: LeRF \u2212 MoRF AUPC {t['srg']:.2f} (MoRF "
            f"{_fmt(t['morf_aupc'])}, LeRF {_fmt(t['lerf_aupc'])}, random order "
            f"{_fmt(t['random_aupc'])})"
        )
    parts = [head]
    if t["passes"] is not None:
        state = "passes" if t["passes"] else "FAILS THE SANITY CHECK"
        cascade = (
            ""
            if t["mprt_mean"] is None
            else f", mean absolute Spearman {_fmt(t['mprt_mean'])} over the cascade"
        )
        parts.append(
            f"sanity: Spearman {_fmt(t['sanity_spearman'])} with the randomised "
            f"model{cascade}, {state}"
        )
    return parts


def trust_line(method: str, scores: Mapping[str, Any]) -> str:
    """:func:`trust_parts` on one line."""
    return "  \u00b7  ".join(trust_parts(method, scores))


def fails_sanity(scores: Mapping[str, Any]) -> bool:
    return slide_trust(scores)["passes"] is False
