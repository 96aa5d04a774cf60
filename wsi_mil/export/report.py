"""One slide's region-label-text report: what is where, what the model did there, what the
text says, and where they disagree.

**Regions** (level-0 polygons, areas in µm² from the slide's µm/px):

* every annotated class (Camelyon16 exclusion areas cut out of the others), source
  ``annotation``;
* the model's region of every class of the run: for the positive class the pixel segmenter's
  lesions (``segment/<slide_id>/lesions.geojson``) when given, source ``segmenter``; otherwise,
  and for the other classes, the tiles whose segmentation-head probability of the class reaches
  ``probability_threshold``, source ``tile head``;
* ``background``: the tissue (the union of the slide's tiles) outside every annotated region.

For each: area, tiles touching it, mean and max normalised attention (tiles weighted by the
share of their area inside the region, exact polygon overlap as in
:mod:`wsi_mil.metrics.regions`), the share of the attention weight (softmax of the raw scores,
what pooling applies) inside it, and its coverage: the share of its area on attended tiles
(``attention_norm >= attention_threshold``) and the share inside the model's region of the
positive class.

**Text** (a ``<slide_id>.txt`` report and a vocabulary, :mod:`wsi_mil.export.report_text`):
for every class the text mentions, affirmed or negated, its alignment with the model: the
model's segmented area of the class, the attention weight inside the class's regions (the
model's region and any annotated region of that class), and the attended tiles there. Each
class gets a status:

* ``unsupported``: affirmed in the text, but the model has neither segmented area of the class
  nor an attended tile in its regions. Listed first: these are the statements a reader should
  check against the slide.
* ``ruled out in text, found by model``: only negated mentions, but the model segmented the
  class (for the classes other than the run's negative class).
* ``supported``, ``ruled out`` (negated and not found), and ``not mentioned`` (a non-negative
  class the model segmented that the text never names).

What this claims: that the text names a class and the model's outputs put (or do not put)
segmented area or attention on it. Not that the text, the model or the annotation is right,
nor where in the slide the text means (a report rarely says), nor anything about words the
vocabulary does not list.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from tiling.annotations import EXCLUSION, SlideAnnotations, tile_boxes, tile_fractions
from wsi_mil.export.params import ReportParams
from wsi_mil.export.report_text import Mention, Vocabulary, find_mentions
from wsi_mil.metrics.explain import attention_weights

BACKGROUND = "background"
#: statuses of the text alignment, in the order they are listed
STATUSES = (
    "unsupported",
    "ruled out in text, found by model",
    "supported",
    "ruled out",
    "not mentioned",
)


def _union_of_tiles(coords: np.ndarray, size: float) -> Any:
    """The tiles' squares as one (multi)polygon; empty without tiles."""
    return shapely.union_all(tile_boxes(coords, size)) if len(coords) else shapely.Polygon()


class _Slide:
    """A slide's tiles, attention and geometry, for measuring regions."""

    def __init__(self, prediction: Any) -> None:
        self.coords = np.asarray(prediction.coords, np.float64)
        self.size = float(prediction.attrs["tile_size_level0"])
        self.mpp = float(prediction.attrs["slide_mpp"])
        self.attention = np.asarray(prediction.attention_norm, np.float64)
        self.weights = attention_weights(prediction.attention)

    def fractions(self, geometry: Any) -> np.ndarray:
        if geometry is None or geometry.is_empty:
            return np.zeros(len(self.coords))
        return tile_fractions(geometry, self.coords, self.size).astype(np.float64)

    def measure(
        self,
        label: str,
        source: str,
        geometry: Any,
        attended: np.ndarray,
        positive: Any,
        fractions: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """One region's row (see the module docstring)."""
        frac = self.fractions(geometry) if fractions is None else fractions
        total = float(frac.sum())
        area = 0.0 if geometry is None else float(geometry.area)
        nan = float("nan")
        row = {
            "label": label,
            "source": source,
            "area_um2": area * self.mpp**2,
            "n_tiles": int((frac > 0).sum()),
            "mean_attention": nan,
            "max_attention": nan,
            "attention_mass": 0.0,
            "coverage_attention": nan,
            "coverage_segmentation": nan,
        }
        if total > 0:
            row.update(
                mean_attention=float((frac * self.attention).sum() / total),
                max_attention=float(self.attention[frac > 0].max()),
                attention_mass=float((frac * self.weights).sum()),
                coverage_attention=float((frac * attended).sum() / total),
            )
        if area > 0:
            inside = (
                0.0
                if positive is None or positive.is_empty
                else float(shapely.intersection(geometry, positive).area)
            )
            row["coverage_segmentation"] = inside / area
        return row


def model_regions(
    prediction: Any, segmented: Any | None, params: ReportParams
) -> tuple[dict[str, Any], dict[str, str], str]:
    """(class -> the model's region, class -> its source, the positive class)."""
    names = list(prediction.class_names)
    positive = names[prediction.positive_index(params.positive_class)]
    coords = np.asarray(prediction.coords, np.float64)
    size = float(prediction.attrs["tile_size_level0"])
    regions, sources = {}, {}
    for i, name in enumerate(names):
        if name == positive and segmented is not None:
            regions[name], sources[name] = segmented, "segmenter"
            continue
        chosen = np.asarray(prediction.tile_probs[:, i]) >= params.probability_threshold
        regions[name], sources[name] = _union_of_tiles(coords[chosen], size), "tile head"
    return regions, sources, positive


def slide_regions(
    prediction: Any,
    annotations: SlideAnnotations | None,
    segmented: Any | None,
    params: ReportParams,
) -> dict[str, Any]:
    """The region rows of one slide and the pieces the text alignment needs."""
    slide = _Slide(prediction)
    attended = (slide.attention >= params.attention_threshold).astype(np.float64)
    regions, sources, positive = model_regions(prediction, segmented, params)
    positive_region = regions[positive]
    rows = []
    annotated: dict[str, Any] = {}
    covered = np.zeros(len(slide.coords))
    if annotations is not None:
        exclusion = annotations.regions.get(EXCLUSION)
        for name, geometry in sorted(annotations.regions.items()):
            if name != EXCLUSION and exclusion is not None:
                geometry = geometry.difference(exclusion)
            annotated[name] = geometry
            frac = slide.fractions(geometry)
            covered += frac
            rows.append(
                slide.measure(name, "annotation", geometry, attended, positive_region, frac)
            )
    for name in prediction.class_names:
        rows.append(slide.measure(name, sources[name], regions[name], attended, positive_region))
    tissue = _union_of_tiles(slide.coords, slide.size)
    outside = (
        tissue.difference(shapely.union_all(list(annotated.values()))) if annotated else tissue
    )
    rows.append(
        slide.measure(
            BACKGROUND,
            "tissue outside annotations",
            outside,
            attended,
            positive_region,
            np.clip(1.0 - covered, 0.0, 1.0),
        )
    )
    lesions = []
    if segmented is not None and not segmented.is_empty:
        truth = annotated.get(positive)
        for polygon in sorted(getattr(segmented, "geoms", [segmented]), key=lambda p: -p.area):
            row = slide.measure(
                f"{positive} lesion", "segmenter", polygon, attended, positive_region
            )
            row["inside_annotation"] = (
                float(shapely.intersection(polygon, truth).area / polygon.area)
                if truth is not None and polygon.area > 0
                else None
            )
            lesions.append(row)
    return {
        "rows": rows,
        "lesions": lesions,
        "regions": regions,
        "annotated": annotated,
        "positive": positive,
        "slide": slide,
        "attended": attended,
    }


def align_text(
    mentions: list[Mention],
    regions: dict[str, Any],
    class_names: list[str],
    negative_class: str | None,
) -> list[dict[str, Any]]:
    """One row per class: its mentions and the model's support (see the module docstring),
    unsupported classes first."""
    slide, attended = regions["slide"], regions["attended"]
    rows = []
    for name in class_names:
        said = [m for m in mentions if m.label == name]
        model_region = regions["regions"][name]
        both = [
            g
            for g in (model_region, regions["annotated"].get(name))
            if g is not None and not g.is_empty
        ]
        frac = slide.fractions(shapely.union_all(both)) if both else np.zeros(len(attended))
        segmented_um2 = float(model_region.area) * slide.mpp**2
        attended_tiles = int(((frac > 0) & (attended > 0)).sum())
        found = segmented_um2 > 0 or attended_tiles > 0
        affirmed = [m for m in said if not m.negated]
        if affirmed:
            status = "supported" if found else "unsupported"
        elif said:
            status = (
                "ruled out in text, found by model"
                if segmented_um2 > 0 and name != negative_class
                else "ruled out"
            )
        elif segmented_um2 > 0 and name != negative_class:
            status = "not mentioned"
        else:
            continue
        rows.append(
            {
                "label": name,
                "status": status,
                "mentions": len(affirmed),
                "negated_mentions": len(said) - len(affirmed),
                "segmented_area_um2": segmented_um2,
                "attention_mass": float((frac * slide.weights).sum()),
                "attended_tiles": attended_tiles,
                "phrases": sorted({m.text.lower() for m in said}),
                "evidence": [asdict(m) for m in said],
            }
        )
    return sorted(rows, key=lambda r: STATUSES.index(r["status"]))


def slide_report(
    prediction: Any,
    annotations: SlideAnnotations | None,
    segmented: Any | None,
    text: str | None,
    vocabulary: Vocabulary | None,
    params: ReportParams,
    sources: dict[str, str | None],
) -> dict[str, Any]:
    """The whole report of one slide as a JSON-able dict; ``sources`` names the input files."""
    from wsi_mil.mil.labels import recognise_negative_class

    regions = slide_regions(prediction, annotations, segmented, params)
    names = list(prediction.class_names)
    negative = prediction.negative_class or recognise_negative_class(names)
    report: dict[str, Any] = {
        "slide_id": prediction.slide_id,
        "predicted_label": prediction.predicted_label,
        "probs": {c: float(p) for c, p in zip(prediction.class_names, prediction.probs)},
        "positive_class": regions["positive"],
        "slide_mpp": regions["slide"].mpp,
        "sources": sources,
        "params": asdict(params),
        "regions": regions["rows"],
        "lesions": regions["lesions"],
        "text": None,
    }
    if text is not None and vocabulary is not None:
        mentions = find_mentions(text, vocabulary, params.negation_window)
        report["text"] = {
            "characters": len(text),
            "mentions": len(mentions),
            "alignment": align_text(mentions, regions, names, negative),
        }
    return report


# -- writing ---------------------------------------------------------------------------------
def _fmt(value: Any, key: str = "") -> str:
    """A table cell: areas in whole µm², other numbers with 3 decimals, NaN and None empty."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if key.endswith("_um2") else f"{value:.3f}"
    return str(value)


REGION_COLUMNS = (
    ("label", "region"),
    ("source", "source"),
    ("area_um2", "area µm²"),
    ("n_tiles", "tiles"),
    ("mean_attention", "mean attention"),
    ("max_attention", "max attention"),
    ("attention_mass", "attention mass"),
    ("coverage_attention", "share attended"),
    ("coverage_segmentation", "share segmented"),
)
TEXT_COLUMNS = (
    ("status", "status"),
    ("label", "class"),
    ("mentions", "mentions"),
    ("negated_mentions", "negated"),
    ("segmented_area_um2", "segmented µm²"),
    ("attention_mass", "attention mass"),
    ("attended_tiles", "attended tiles"),
)


def _tables(report: dict[str, Any], params: ReportParams) -> list[tuple[str, tuple, list]]:
    """(heading, columns, rows) of the report's tables, for both page formats."""
    tables: list[tuple[str, tuple, list]] = [("Regions", REGION_COLUMNS, report["regions"])]
    if report["lesions"]:
        shown = report["lesions"][: params.max_lesions_listed]
        tables.append(
            (
                f"Segmented lesions ({len(shown)} largest of {len(report['lesions'])})",
                (*REGION_COLUMNS[2:7], ("inside_annotation", "share inside annotation")),
                shown,
            )
        )
    if report["text"] is not None:
        tables.append(("Report text and the model", TEXT_COLUMNS, report["text"]["alignment"]))
    return tables


def _summary_lines(report: dict[str, Any]) -> list[str]:
    probs = ", ".join(f"P({c}) {p:.3f}" for c, p in report["probs"].items())
    source = "pixel segmenter" if report["sources"].get("segment") else "tile head"
    first = (
        f"Predicted **{report['predicted_label']}** ({probs}); the model's "
        f"{report['positive_class']} region comes from the {source}."
    )
    lines = [first]
    text = report["text"]
    if text is None:
        lines.append("No report text was given: no text alignment.")
    else:
        flagged = [r for r in text["alignment"] if r["status"] == "unsupported"]
        lines.append(
            f"{text['mentions']} mention(s) of the vocabulary in the text; "
            + (
                f"**not supported by the model: {', '.join(r['label'] for r in flagged)}**"
                if flagged
                else "every affirmed class is supported by the model"
            )
            + "."
        )
    return lines


def report_markdown(report: dict[str, Any], params: ReportParams) -> str:
    """The report as a Markdown page."""
    out = [f"# {report['slide_id']}: regions, labels and text", "", *_summary_lines(report), ""]
    for heading, columns, rows in _tables(report, params):
        out += [
            f"## {heading}",
            "",
            "| " + " | ".join(t for _, t in columns) + " |",
            "|---" * len(columns) + "|",
        ]
        out += ["| " + " | ".join(_fmt(r.get(k), k) for k, _ in columns) + " |" for r in rows]
        out.append("")
    if report["text"] is not None:
        out += ["## Mentions", ""]
        for row in report["text"]["alignment"]:
            for m in row["evidence"]:
                neg = f' (negated by "{m["cue"]}")' if m["negated"] else ""
                out.append(f'- {row["label"]}: "{m["text"]}"{neg}, in: {m["sentence"]}')
        out.append("")
    out.append(f"Sources: {json.dumps(report['sources'])}")
    return "\n".join(out) + "\n"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}
table{border-collapse:collapse;margin-bottom:1.2em}td,th{border:1px solid #ccc;padding:2px 6px;
font-size:90%}td.num{text-align:right}tr.unsupported td{background:#fde2e2}
.muted{color:#666}</style></head><body>
<h1>{{ title }}</h1>
{% for line in summary %}<p>{{ line }}</p>{% endfor %}
{% for heading, columns, rows in tables %}<h2>{{ heading }}</h2>
<table><tr>{% for _, t in columns %}<th>{{ t }}</th>{% endfor %}</tr>
{% for r in rows %}<tr class="{{ r.get('status', '') | replace(' ', '-') | replace(',', '') }}">
{% for k, _ in columns %}<td class="{{ 'num' if r.get(k) is number else '' }}">
{{- fmt(r.get(k), k) }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endfor %}
{% if mentions %}<h2>Mentions</h2><ul>{% for label, m in mentions %}
<li>{{ label }}: &ldquo;{{ m.text }}&rdquo;
{%- if m.negated %} (negated by &ldquo;{{ m.cue }}&rdquo;){% endif %},
in: <span class="muted">{{ m.sentence }}</span></li>{% endfor %}</ul>{% endif %}
<p class="muted">Sources: {{ sources }}</p></body></html>
"""


def report_html(report: dict[str, Any], params: ReportParams) -> str:
    """The report as a standalone HTML page (Jinja2, every value escaped)."""
    from jinja2 import Environment

    env = Environment(autoescape=True)
    summary = [line.replace("**", "") for line in _summary_lines(report)]
    mentions = [
        (row["label"], m)
        for row in (report["text"] or {}).get("alignment", [])
        for m in row["evidence"]
    ]
    return env.from_string(_HTML).render(
        title=f"{report['slide_id']}: regions, labels and text",
        summary=summary,
        tables=_tables(report, params),
        mentions=mentions,
        fmt=_fmt,
        sources=json.dumps(report["sources"]),
    )


def write_report(folder: Path, report: dict[str, Any], params: ReportParams) -> list[Path]:
    """``<slide_id>.json``, ``.md`` and ``.html`` in ``folder`` (each written atomically)."""
    from tiling.storage import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / report["slide_id"]
    paths = [stem.with_suffix(".md"), stem.with_suffix(".html"), stem.with_suffix(".json")]
    write_text_atomic(paths[0], report_markdown(report, params))
    write_text_atomic(paths[1], report_html(report, params))
    write_text_atomic(paths[2], json.dumps(report, indent=2, default=_json_value) + "\n")
    return paths  # the JSON last: it marks the slide complete


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")
