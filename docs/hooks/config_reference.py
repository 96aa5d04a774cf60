"""mkdocs hook: the configuration reference page, generated from the parameter dataclasses.

Each stage's parameters are one frozen dataclass whose ``#:`` field comments are their
documentation; ``configs/default.yaml`` and every verb's flags are generated from the same
classes (:mod:`wsi_mil.config.pipeline`, :mod:`wsi_mil.cli.options`). This hook writes them
as tables (YAML key, default, the values allowed, the verb's flag, what it does) where
``configuration.md`` holds the marker below, so the page cannot drift from the code. A flag is
shown only when the verb's real parser has it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any

MARKER = "<!-- generated: configuration reference -->"

#: config section -> the verbs whose flags set it (the first one that has a flag is shown)
SECTION_VERBS = {
    "slides": ("tile",),
    "cohort": ("cohort",),
    "tiling": ("tile",),
    "extract": ("extract",),
    "train": ("train",),
    "predict": ("predict",),
    "heatmap": ("heatmap",),
    "evaluate": ("evaluate",),
    "segment": ("segment", "segment-train"),
    "explain": ("explain",),
    "executor": ("tile",),
}
#: keys whose flag is not named after them (the executor flags every per-slide verb shares)
RENAMED_FLAGS = {
    "executor.kind": "--executor",
    "executor.address": "--scheduler",
    "evaluate.annotations_dir": "--annotations",  # the name the other verbs give it
}


def _verb_flags() -> dict[str, set[str]]:
    """verb -> the option strings its parser defines."""
    from wsi_mil.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {verb: set(p._option_string_actions) for verb, p in sub.choices.items()}


def _cell(text: str) -> str:
    """A table cell: pipes escaped, and ``<`` / ``>`` outside code spans (``<slide_id>`` is
    not an HTML tag)."""
    parts = re.split(r"(``.*?``|`[^`]*`)", text.replace("\n", " "))
    return "".join(
        part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;")
        for i, part in enumerate(parts)
    ).replace("|", "\\|")


def _default(f: dataclasses.Field) -> str:
    from wsi_mil.config.pipeline import yaml_value

    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    return f"`{yaml_value(value)}`"


def _rows(
    cls: type, prefix: str, section: str, verbs: tuple[str, ...], flags: dict[str, set[str]]
) -> list[str]:
    from wsi_mil.cli.options import flag_name
    from wsi_mil.config.pipeline import _dataclass_type
    from wsi_mil.config.schema import allowed, field_comments, ordered_fields

    comments, hints = field_comments(cls), typing.get_type_hints(cls)
    rows = []
    for f in ordered_fields(cls):
        key = f"{prefix}{f.name}"
        nested = _dataclass_type(hints[f.name])
        if nested is not None:
            rows.append(f"| `{key}` | {_default(f)} | | | {_cell(comments.get(f.name, ''))} |")
            rows += _rows(nested, f"{key}.", section, verbs, flags)
            continue
        flag = ""
        for verb in verbs:
            for candidate in (
                RENAMED_FLAGS.get(f"{section}.{key}", ""),
                flag_name(key),
                flag_name(f.name),
            ):
                if candidate in flags.get(verb, set()):
                    flag = f"`wsi-mil {verb} {candidate}`"
                    break
            if flag:
                break
        rows.append(
            f"| `{key}` | {_default(f)} | {_cell(allowed(f, hints[f.name]))} | {flag} | "
            f"{_cell(comments.get(f.name, ''))} |"
        )
    return rows


def reference_markdown() -> str:
    """Every key of a run config, section by section, as Markdown tables."""
    from wsi_mil.config.pipeline import PipelineConfig, _dataclass_type
    from wsi_mil.config.schema import allowed, field_comments, ordered_fields

    flags = _verb_flags()
    header = "| key | default | allowed | flag | what it does |\n|---|---|---|---|---|"
    comments, hints = field_comments(PipelineConfig), typing.get_type_hints(PipelineConfig)
    top = [f for f in ordered_fields(PipelineConfig) if _dataclass_type(hints[f.name]) is None]
    out = ["## Top level", "", header]
    out += [
        f"| `{f.name}` | {_default(f)} | {_cell(allowed(f, hints[f.name]))} | | "
        f"{_cell(comments.get(f.name, ''))} |"
        for f in top
    ]
    for f in ordered_fields(PipelineConfig):
        section = _dataclass_type(hints[f.name])
        if section is None:
            continue
        optional = type(None) in typing.get_args(hints[f.name])
        out += [
            "",
            f"## `{f.name}`",
            "",
            _cell(comments.get(f.name, ""))
            + (" The section is optional (`null` by default)." if optional else ""),
            "",
            header,
        ]
        out += _rows(section, "", f.name, SECTION_VERBS.get(f.name, ()), flags)
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, reference_markdown())
    return markdown
