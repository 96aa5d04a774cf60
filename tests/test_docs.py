"""The documentation site's generated configuration reference covers every key."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from wsi_mil.config.pipeline import PipelineConfig
from wsi_mil.config.schema import field_comments
from wsi_mil.mil.params import TrainParams

REPO = Path(__file__).resolve().parents[1]


def hook():
    spec = importlib.util.spec_from_file_location(
        "config_reference", REPO / "docs" / "hooks" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_has_every_section_and_train_key_with_its_flag():
    text = hook().reference_markdown()
    for f in dataclasses.fields(PipelineConfig):
        assert f"`{f.name}`" in text, f.name
    train = text.split("## `train`", 1)[1].split("\n## ", 1)[0]
    comments = field_comments(TrainParams)
    for f in dataclasses.fields(TrainParams):
        row = next(line for line in train.splitlines() if line.startswith(f"| `{f.name}` |"))
        flag = "--" + f.name.replace("_", "-")
        assert f"`wsi-mil train {flag}`" in row, row
        assert comments[f.name].split()[0] in row, row


def test_the_marker_is_on_the_configuration_page():
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert hook().MARKER in page
