"""The pipeline config: shipped configs validate, every key is documented, mistakes are named."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from wsi_mil.config.pipeline import (
    ConfigError,
    PipelineConfig,
    default_config,
    default_config_text,
    load_config,
    parse_config,
    read_yaml,
    resolved_config_text,
)
from wsi_mil.export.params import ReportParams

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIGS = REPO_ROOT / "configs"


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml", "camelyon16.yaml"])
def test_each_shipped_config_validates(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, PipelineConfig)
    assert config.out.is_absolute()


def test_default_yaml_is_the_generated_documentation():
    """configs/default.yaml lists every key with its comment; regenerate it with
    `wsi-mil run --print-defaults > configs/default.yaml` when a stage adds a parameter."""
    assert (CONFIGS / "default.yaml").read_text(encoding="utf-8") == default_config_text(), (
        "configs/default.yaml is out of date with the stages' parameters: regenerate it with "
        "`wsi-mil run --print-defaults > configs/default.yaml`"
    )


def test_default_yaml_holds_every_key_at_its_default():
    text = (CONFIGS / "default.yaml").read_text(encoding="utf-8")
    assert parse_config(yaml.safe_load(text)) == parse_config(
        yaml.safe_load(resolved_config_text(default_config()))
    )

    def keys(cls: type) -> list[str]:
        """Every key of a dataclass and of its nested dataclass sections."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            out.append(f.name)
            for option in typing.get_args(hints[f.name]) or (hints[f.name],):
                if dataclasses.is_dataclass(option):
                    out += keys(option)
        return out

    lines = {line.lstrip("# ").split(":")[0] for line in text.splitlines() if ":" in line}
    missing = [key for key in keys(PipelineConfig) if key not in lines]
    assert not missing
    comments = [line for line in text.splitlines() if line.lstrip().startswith("# ")]
    assert len(comments) > len(keys(PipelineConfig))


def test_demo_yaml_is_the_embedded_demo_config():
    from wsi_mil.pipeline.demo import DEMO_CONFIG

    assert (CONFIGS / "demo.yaml").read_text(encoding="utf-8") == DEMO_CONFIG


def test_misspelt_key_fails_with_its_name_section_and_file(tmp_path):
    path = tmp_path / "mine.yaml"
    text = (CONFIGS / "demo.yaml").read_text(encoding="utf-8").replace("epochs:", "epoks:")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: train.epoks: unknown key")
    assert "did you mean 'epochs'" in message


def test_misspelt_key_through_the_command(tmp_path, capsys):
    from wsi_mil.cli import main

    path = tmp_path / "mine.yaml"
    path.write_text(
        "out: o\nlabels: l.csv\nslides: {inputs: [s]}\ntiling: {tile_sise: 128}\n", encoding="utf-8"
    )
    assert main(["run", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert "tiling.tile_sise: unknown key (did you mean 'tile_size'?)" in err and str(path) in err


def test_key_at_the_wrong_level_is_pointed_to_its_section():
    with pytest.raises(ConfigError, match=r"epochs: unknown key \(did you mean 'train.epochs'"):
        parse_config({"out": "o", "cohort": {}, "epochs": 3}, source="c.yaml")


def test_stage_validation_errors_are_config_errors():
    with pytest.raises(ConfigError, match=r"c.yaml: tiling.tile_size: 0: must be >= 1"):
        parse_config({"out": "o", "cohort": {}, "tiling": {"tile_size": 0}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"train\.model: 'gated_abmill': must be one of"):
        parse_config({"out": "o", "cohort": {}, "train": {"model": "gated_abmill"}})


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"out": "o", "labels": "l.csv"}, "no slides"),
        ({"out": "o", "slides": {"inputs": ["s"]}}, "no labels"),
        ({"out": "o", "cohort": {}, "labels": "l.csv"}, "a cohort brings its own"),
        ({"out": "o", "cohort": {}, "stages": ["tile", "trian"]}, "did you mean 'train'"),
        ({"cohort": {}}, "missing required key.*out"),
    ],
)
def test_pipeline_rules(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_config(data)


def test_slides_and_labels_only_needed_by_the_stages_that_use_them():
    config = parse_config({"out": "o", "stages": ["predict", "heatmap"]})
    assert config.labels is None and config.slide_inputs == ()


def test_relative_paths_resolve_against_the_working_folder(tmp_path):
    config = parse_config(
        {"out": "o", "labels": "l.csv", "slides": {"inputs": ["a", "/b"]}}, base=tmp_path
    )
    assert config.out == tmp_path / "o"
    assert config.slides.inputs == (tmp_path / "a", Path("/b"))
    assert config.features_dir == tmp_path / "o" / "features" / "efficientnet_lite0"


def test_cohort_supplies_slides_labels_and_annotations(tmp_path):
    config = parse_config({"out": "o", "cohort": {"train_normal": 2}}, base=tmp_path)
    assert config.cohort.train_normal == 2
    assert config.slide_inputs == (tmp_path / "o" / "cohort" / "slides",)
    assert config.labels_csv == tmp_path / "o" / "cohort" / "labels.csv"
    assert config.annotations_dir == tmp_path / "o" / "cohort" / "annotations"
    without = parse_config({"out": "o", "labels": "l.csv", "slides": {"inputs": ["s"]}})
    assert "cohort" not in without.stages and without.annotations_dir is None


def test_sections_map_onto_the_stage_dataclasses():
    from features.params import ExtractParams
    from wsi_mil.explain.params import LesionEvalParams
    from wsi_mil.mil.params import PredictParams

    config = parse_config(
        {
            "out": "o",
            "cohort": {},
            "extract": {"encoder": "uni", "batch_size": 8},
            "predict": {"split": "test", "chunk_size": 99},
            "evaluate": {"pointing_k": 3, "froc": {"dilation_um": 50}},
        }
    )
    assert config.extract.params() == ExtractParams(batch_size=8)
    assert config.predict.params() == PredictParams(chunk_size=99)
    lesion = config.evaluate.params()
    assert isinstance(lesion, LesionEvalParams) and lesion.pointing_k == 3
    assert lesion.froc.dilation_um == 50.0


def test_resolved_config_round_trips(tmp_path):
    config = load_config(CONFIGS / "camelyon16.yaml")
    path = tmp_path / "resolved.yaml"
    path.write_text(resolved_config_text(config), encoding="utf-8")
    assert load_config(path) == config
    assert read_yaml(path)["tiling"]["tile_size"] == 224


def test_features_folder_is_where_extraction_writes():
    from features.registry import Encoder

    config = parse_config(
        {"out": "o", "cohort": {}, "extract": {"encoder": "timm:vit_small_patch16_224"}}
    )
    encoder = Encoder(
        name="timm:vit_small_patch16_224",
        model=None,
        dim=1,
        input_size=1,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        weights="",
        weights_sha256="",
    )
    assert config.features_dir.name == encoder.slug


def test_predict_split_needs_labels():
    with pytest.raises(ConfigError, match="predict.split is 'test' but there are no labels"):
        parse_config({"out": "o", "stages": ["predict"], "predict": {"split": "test"}})


def _params_classes(cls: type) -> set[type]:
    """Every parameter dataclass reachable from ``cls`` through its fields' types, with the
    dataclasses they derive from (a config section extends a stage's parameters)."""
    found = {base for base in cls.__mro__ if dataclasses.is_dataclass(base)}
    for hint in typing.get_type_hints(cls).values():
        for candidate in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(candidate) and candidate not in found:
                found |= _params_classes(candidate)
    return found


@pytest.mark.parametrize(
    ("shared", "fields"),
    [
        (
            "lesion fraction",
            {
                "TrainParams.tile_label_threshold",
                "ExplainParams.min_fraction",
                "LesionEvalParams.min_fraction",
            },
        ),
        (
            "positive-tile threshold",
            {
                "HeatmapParams.seg_threshold",
                "LesionEvalParams.seg_threshold",
                "ReportParams.probability_threshold",
                "SegmentParams.threshold",
            },
        ),
        (
            "positive class",
            {
                "HeatmapParams.positive_class",
                "LesionEvalParams.positive_class",
                "ReportParams.positive_class",
                "SegmentParams.positive_class",
            },
        ),
        (
            "attended tile",
            {"ReportParams.attention_threshold", "LesionEvalParams.attention_threshold"},
        ),
        (
            "device",
            {
                "ExtractParams.device",
                "TrainParams.device",
                "PredictParams.device",
                "ExplainParams.device",
                "SegmentParams.device",
                "SegmentTrainParams.device",
            },
        ),
    ],
)
def test_a_shared_parameter_has_one_definition(shared, fields):
    """The fields that mean the same thing carry the same default, range and documentation
    (each comes from one field factory), so the stages cannot drift apart."""
    by_name = {}
    for cls in _params_classes(PipelineConfig) | _params_classes(ReportParams):
        for f in dataclasses.fields(cls):
            by_name.setdefault(f"{cls.__name__}.{f.name}", f)
    assert fields <= by_name.keys(), (
        f"{shared}: {sorted(fields - by_name.keys())} not in the schema"
    )
    definitions = {(repr(by_name[n].default), repr(dict(by_name[n].metadata))) for n in fields}
    assert len(definitions) == 1, f"{shared} defined {len(definitions)} ways: {definitions}"
    assert "doc" in by_name[next(iter(fields))].metadata
