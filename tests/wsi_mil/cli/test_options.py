"""One source for every parameter: each stage field is a flag of its verb and a YAML key, with
the same default; the flags build the same dataclass the YAML does."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from wsi_mil.cli import build_parser
from wsi_mil.cli.options import flag_name, option_fields, options_from_args
from wsi_mil.config.pipeline import PipelineConfig, parse_config
from wsi_mil.config.schema import build_dataclass

#: config section -> the verb whose flags set it.
SECTION_VERB = {
    "slides": "tile",
    "tiling": "tile",
    "extract": "extract",
    "train": "train",
    "predict": "predict",
    "heatmap": "heatmap",
    "evaluate": "evaluate",
    "cohort": "cohort",
    "explain": "explain",
    "segment": "segment",
}
#: Sections whose nested part belongs to another verb, and fields a verb sets by a flag of its
#: own: the segment section holds the segmenter's training (``segment-train``) and the model
#: folder, which ``wsi-mil segment --model`` requires (a verb has no OUT to default it from).
NESTED_VERB = {("segment", "train"): "segment-train"}
OWN_FLAG = {("segment", "model")}
#: Fields whose flag is not named after them: the name the other verbs give the same thing.
FLAG_OF = {("evaluate", "annotations_dir"): "--annotations"}
#: The executor section describes a cluster (LocalCluster sizes, twenty SLURM settings): a config
#: file's job. Its kind and address are the per-slide verbs' --executor and --scheduler.
CONFIG_ONLY = {"executor"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _section_class(name: str) -> type:
    hint = typing.get_type_hints(PipelineConfig)[name]
    options = typing.get_args(hint) or (hint,)
    return next(o for o in options if dataclasses.is_dataclass(o))


def test_every_dataclass_section_has_a_verb():
    sections = {
        f.name
        for f in dataclasses.fields(PipelineConfig)
        if any(
            dataclasses.is_dataclass(o)
            for o in (
                typing.get_args(typing.get_type_hints(PipelineConfig)[f.name])
                or (typing.get_type_hints(PipelineConfig)[f.name],)
            )
        )
    }
    assert sections - CONFIG_ONLY <= set(SECTION_VERB), sections - set(SECTION_VERB)


@pytest.mark.parametrize("verb", ["tile", "extract", "predict", "heatmap", "explain"])
def test_per_slide_verbs_choose_their_executor(verb):
    flags = {s for a in _subparsers()[verb]._actions for s in a.option_strings}
    assert {"--executor", "--scheduler"} <= flags


def _cases() -> list[tuple[str, type, str]]:
    """(section, dataclass, verb) for every part of every section."""
    cases = []
    for section, verb in sorted(SECTION_VERB.items()):
        cls = _section_class(section)
        cases.append((section, cls, verb))
        for (name, nested), other in NESTED_VERB.items():
            if name == section:
                hint = typing.get_type_hints(cls)[nested]
                cases.append((f"{section}.{nested}", hint, other))
    return cases


@pytest.mark.parametrize("section, cls, verb", _cases(), ids=lambda v: str(v))
def test_every_field_is_a_flag_with_the_yaml_default(section, cls, verb):
    parser = _subparsers()[verb]
    by_dest = {
        a.dest: a
        for a in parser._actions  # not a former spelling (hidden)
        if a.help != argparse.SUPPRESS
    }
    yaml_defaults = build_dataclass(cls, {}, where=f"test: {section}")
    nested_elsewhere = {n for (s, n) in NESTED_VERB if s == section}
    for dest, f, _hint, doc in option_fields(cls):
        if dest.split(".")[0] in nested_elsewhere or (section, dest) in OWN_FLAG:
            continue
        assert dest in by_dest, f"{section}.{dest} has no flag on `wsi-mil {verb}`"
        action = by_dest[dest]
        if action.option_strings:  # positional inputs have no flag name
            assert FLAG_OF.get((section, dest), flag_name(dest)) in action.option_strings
        assert doc, f"{cls.__name__}.{f.name} has no #: documentation"
        value = yaml_defaults
        for part in dest.split("."):
            value = getattr(value, part)
        shown = value if not isinstance(value, tuple) else " ".join(map(str, value)) or "none"
        if isinstance(value, bool):
            shown = "on" if value else "off"
        if action.option_strings:
            expected = f"default: {'none' if value is None else shown}"
            assert expected in action.help.replace("%%", "%"), (dest, action.help)
    for _, own in ((s, n) for s, n in OWN_FLAG if s == section):
        assert flag_name(own) in {o for a in parser._actions for o in a.option_strings}


def test_flags_and_yaml_build_the_same_parameters(tmp_path):
    parser = build_parser()
    args = parser.parse_args(
        [
            "tile",
            "slides/",
            "--out",
            str(tmp_path),
            "--tile-size",
            "224",
            "--no-pen-filter",
            "--pen-hue-deg",
            "70",
            "190",
            "--tissue-method",
            "fixed",
        ]
    )
    from tiling.params import TilingParams

    from_flags = options_from_args(TilingParams, args)
    config = parse_config(
        {
            "out": str(tmp_path),
            "slides": {"inputs": ["slides/"]},
            "labels": "labels.csv",
            "tiling": {
                "tile_size": 224,
                "pen_filter": False,
                "pen_hue_deg": [70, 190],
                "tissue_method": "fixed",
            },
        }
    )
    assert from_flags == config.tiling


def test_list_flags_take_commas_or_spaces_and_nested_flags_reach_nested_fields():
    parser = build_parser()
    args = parser.parse_args(
        ["heatmap", "--predictions", "p", "--heatmaps", "o", "--formats", "png,zarr"]
    )
    from wsi_mil.heatmaps.params import HeatmapParams

    assert options_from_args(HeatmapParams, args).formats == ("png", "zarr")
    args = parser.parse_args(
        [
            "evaluate",
            "--predictions",
            "p",
            "--labels",
            "l.csv",
            "--froc-dilation-um",
            "50",
            "--exclude",
            "a",
            "b",
        ]
    )
    from wsi_mil.config.pipeline import EvaluateSection

    section = options_from_args(EvaluateSection, args)
    assert section.froc.dilation_um == 50.0 and section.exclude == ("a", "b")
    assert section.froc.itc_axis_um == 275.0  # the rest of the nested section keeps defaults


#: (verb and its other required arguments, former spelling, new spelling, destination): every
#: flag renamed in 0.2.0, whose former spelling works for one release
RENAMED_FLAGS = [
    (["train", "--features", "f", "--labels", "l.csv"], "--out", "--run", "run"),
    (["heatmap", "--predictions", "p"], "--out", "--heatmaps", "heatmaps"),
    (["explain", "--run", "r", "--features", "f"], "--out", "--explanations", "explanations"),
    (
        ["evaluate", "--predictions", "p", "--labels", "l.csv"],
        "--out",
        "--evaluation",
        "evaluation",
    ),
    (["segment-train", "--slides", "s", "--annotations", "a"], "--out", "--model", "model"),
    (["extract", "--tiles", "t", "--features", "f"], "--workers", "--tile-readers", "tile_readers"),
    (
        ["evaluate", "--predictions", "p", "--labels", "l.csv"],
        "--annotations-dir",
        "--annotations",
        "annotations_dir",
    ),
    (["compare", "a", "b", "--labels", "l.csv"], "--out", "--comparison", "comparison"),
    (["audit", "--features", "f", "--labels", "l.csv"], "--out", "--audit", "audit"),
    (["agreement", "ratings"], "--out", "--table", "table"),
    (["cohort"], "--out", "--cohort", "cohort"),
]


@pytest.mark.parametrize(
    ("argv", "old", "new", "dest"),
    RENAMED_FLAGS,
    ids=[f"{a[0]} {o}" for a, o, _, _ in RENAMED_FLAGS],
)
def test_a_renamed_flag_still_works_and_says_so(argv, old, new, dest, capsys):
    parser = build_parser()
    value = "3" if dest == "tile_readers" else "somewhere"
    by_new = vars(parser.parse_args([*argv, new, value]))
    assert "deprecated" not in capsys.readouterr().err
    by_old = vars(parser.parse_args([*argv, old, value]))
    notice = capsys.readouterr().err
    assert by_old[dest] == by_new[dest] and str(by_new[dest]) == value
    assert f"{old} is deprecated and goes in the next release: use {new}" in notice
    assert len(notice.strip().splitlines()) == 1
    with pytest.raises(SystemExit):  # not both
        parser.parse_args([*argv, old, value, new, value])
    former = [a for a in _subparsers()[argv[0]]._actions if old in a.option_strings]
    assert [a.help for a in former] == [argparse.SUPPRESS]  # left out of --help


def test_a_renamed_yaml_key_still_works_and_warns():
    with pytest.warns(FutureWarning, match="extract.workers: deprecated key.*use tile_readers"):
        config = parse_config(
            {"out": "o", "slides": {"inputs": ["s"]}, "labels": "l.csv", "extract": {"workers": 3}}
        )
    assert config.extract.tile_readers == 3
    with pytest.raises(ValueError, match="give only tile_readers"):
        parse_config(
            {
                "out": "o",
                "slides": {"inputs": ["s"]},
                "labels": "l.csv",
                "extract": {"workers": 3, "tile_readers": 2},
            }
        )


def test_every_help_page_reads_as_text():
    """No verb's --help shows argparse's escapes or placeholders ("95%%", "%(default)s")."""
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in {"wsi-mil": parser, **verbs.choices}.items():
        text = sub.format_help()
        assert "%%" not in text and "%(" not in text, name
