"""``wsi-mil encoders``: the encoder registry, each entry's output and where its weights are.

Checks only local files (bundled weights, the weights folder, the Hugging Face cache), never
the network, so it answers instantly offline and says what is missing before a long run.
"""

from __future__ import annotations

import argparse
from typing import Any


def encoders_table() -> str:
    """The registry as text: one row per encoder, then where each one's weights are expected."""
    from features.params import DEFAULT_ENCODER
    from features.registry import list_encoders
    from features.weights import weights_dir

    specs = list_encoders()
    rows = [("name", "dim", "input", "pooling", "licence", "weights")]
    rows += [
        (
            s.name + (" (default)" if s.name == DEFAULT_ENCODER else ""),
            str(s.dim),
            str(s.input_size),
            s.pooling,
            s.licence + (" (gated)" if s.gated else ""),
            s.weights_status(),
        )
        for s in specs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5]
        for row in rows
    ]
    lines += [
        "",
        (
            f"Weights: --weights FILE or FOLDER, or <name>.safetensors (.pth, .bin) or a "
            f"folder <name>/ in {weights_dir()} (set WSI_MIL_WEIGHTS to change it), or the "
            f"Hugging Face cache; the hub is asked only when HF_HUB_OFFLINE is unset. "
            f"docs/encoders.md says more."
        ),
        "",
    ]
    for spec in specs:
        lines.append(f"{spec.name}: {spec.description}; {spec.architecture}")
        if spec.hub_id:
            lines.append(
                f"    hub: {spec.hub_id} ({', '.join(spec.hub_filenames)})"
                + (", gated: accept its terms on the model page first" if spec.gated else "")
            )
        if spec.card:
            lines.append(f"    settings from: {spec.card}")
    lines += [
        "",
        (
            "timm:<architecture>: any timm model, with --weights PATH or "
            "--weights hf-hub:<repo>; pooled features of the model's width."
        ),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    print(encoders_table())
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "encoders",
        help="list the feature encoders and where their weights are expected",
        description="List the encoder registry: output dimension, input size, token pooling, "
        "licence, architecture, and whether each encoder's weights are available locally "
        "(checked without the network). docs/encoders.md has the table and how to get weights.",
    )
    p.set_defaults(func=run)
