"""YAML run configurations: one file that sets every stage's parameters, checked before anything runs.

Every stage keeps its user-settable parameters in a frozen dataclass (``TilingParams``,
``ExtractParams``, ...). A config file is a mapping of sections; each section is mapped onto its
dataclass *by field name*, so the YAML keys are exactly the dataclass fields and their
documentation is the dataclass's. Nothing is guessed: a key that is not a field is an error that
names the key, its section and the file, with a "did you mean" suggestion, because a misspelt
key silently falling back to its default is how a long batch runs with the wrong parameters.

Values are checked against the field's type hint (``float``, ``int``, ``bool``, ``str``,
``Path``, ``tuple[...]``, ``list[...]``, ``Literal[...]``, ``X | None``, nested dataclasses), with
the conversions YAML needs: an integer where a float is expected, a list where a tuple is
expected, a string where a path is expected. The resolved config (every field, defaults
included, paths absolute) is written beside the outputs, so a run says how it was made.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import textwrap
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from features.params import DEFAULT_ENCODER, ExtractParams
from tiling.params import TilingParams
from wsi_mil.config.executor import ExecutorParams
from wsi_mil.config.schema import (
    ConfigError,
    build_dataclass,
    check_fields,
    constrained,
    field_comments,
    ordered_fields,
)
from wsi_mil.explain.params import ExplainParams, LesionEvalParams
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.mil.params import PredictParams, TrainParams
from wsi_mil.project import Project
from wsi_mil.segment.params import SegmentParams, SegmentTrainParams
from wsi_mil.synthetic.params import CohortParams


def to_plain(value: Any) -> Any:
    """A dataclass (or any value in one) as YAML-safe builtins: mappings, lists, scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in ordered_fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "item") and callable(value.item):  # NumPy scalar
        return value.item()
    return value


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists of scalars (``[0.5, 1.0]``): readable configs."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def yaml_value(value: Any) -> str:
    """One value as inline YAML (``null``, ``0.5``, ``[png, zarr]``, ``'0.4'``)."""
    text = yaml.dump(
        to_plain(value), Dumper=_Dumper, default_flow_style=True, allow_unicode=True, width=10_000
    )
    return text.removesuffix("\n...\n").strip()


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level mapping of a YAML file (``yaml.safe_load``), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, not {type(data).__name__}"
        )
    return dict(data)


def dump_yaml(value: Any, header: str = "") -> str:
    """YAML text of a dataclass or mapping, keys in declaration order, with a comment header."""
    body = yaml.dump(
        to_plain(value),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    lines = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    return lines + body


# --------------------------------------------------------------------------- the pipeline schema

#: The stages ``wsi-mil run`` knows, in the order they run.
STAGES = (
    "cohort",
    "tile",
    "extract",
    "train",
    "predict",
    "heatmap",
    "segment",
    "explain",
    "evaluate",
)


@dataclass(frozen=True)
class SlidesSection:
    """Where the slides are, and how their resolution is known (YAML section ``slides``)."""

    #: Slide files or folders of slides (every format OpenSlide reads).
    inputs: tuple[Path, ...] = ()
    #: Search the folders in ``inputs`` recursively.
    recursive: bool = False
    #: Level-0 µm/px for every slide, overriding the metadata (null: use the metadata).
    mpp: float | None = constrained(None, gt=0)
    #: CSV ``slide_id,mpp`` of per-slide overrides (wins over ``mpp``).
    mpp_csv: Path | None = None

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ExtractSection(ExtractParams):
    """Feature extraction (YAML section ``extract``): the encoder and :class:`ExtractParams`."""

    #: Encoder registry name (``wsi-mil encoders`` lists them) or ``timm:<architecture>``.
    encoder: str = DEFAULT_ENCODER
    #: Local weights file (.safetensors/.pth/.bin) or ``hf-hub:<repo>``; null: the encoder's own.
    weights: str | None = None

    def params(self) -> ExtractParams:
        """The :class:`ExtractParams` part, as the extraction functions take it."""
        return ExtractParams(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(ExtractParams)}
        )


@dataclass(frozen=True)
class PredictSection(PredictParams):
    """Prediction (YAML section ``predict``): which slides, and :class:`PredictParams`."""

    #: Predict only the slides of this split of the labels CSV (e.g. test: the held-out
    #: slides); null: every feature bag. Heatmaps and evaluation follow the predictions.
    split: str | None = None

    def params(self) -> PredictParams:
        """The :class:`PredictParams` part, as the prediction functions take it."""
        return PredictParams(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(PredictParams)}
        )


@dataclass(frozen=True)
class EvaluateSection(LesionEvalParams):
    """Evaluation (YAML section ``evaluate``): slide metrics, and lesion metrics
    (:class:`LesionEvalParams`) when lesion annotations are known."""

    #: Folder of lesion annotations named ``<slide_id>.xml`` (ASAP), ``.json`` or ``.geojson``
    #: for the FROC, tile-level Dice and the pointing game; null: none (with a cohort: its
    #: own annotations).
    annotations_dir: Path | None = None
    #: Bootstrap resamples of the slide AUC's 95 % confidence interval (0: none).
    bootstrap: int = constrained(1000, ge=0)
    #: Negative class of the slide metrics (null: the one the run recorded).
    negative_class: str | None = None
    #: Unit the metrics count: "slide", or "patient" (a patient's slides combined by
    #: patient_aggregate, needs a patient_id column in the labels CSV; a patient is positive
    #: when any of its slides is).
    level: Literal["slide", "patient"] = "slide"
    #: How a patient's slide probabilities are combined at level patient: "mean", or "max"
    #: (two classes only: the patient's most positive slide).
    patient_aggregate: Literal["mean", "max"] = "mean"

    def params(self) -> LesionEvalParams:
        """The :class:`LesionEvalParams` part, as :func:`evaluate_lesions` takes it."""
        return LesionEvalParams(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(LesionEvalParams)}
        )


@dataclass(frozen=True)
class SegmentSection(SegmentParams):
    """Pixel lesion segmentation (YAML section ``segment``): which segmenter, and
    :class:`SegmentParams` for the flagged tiles it segments."""

    #: Model folder of ``wsi-mil segment-train``; null: train one into OUT/segmenter/ on the
    #: annotated slides (of the labels' train split when there is one).
    model: Path | None = None
    #: How that segmenter is trained when ``model`` is null.
    train: SegmentTrainParams = field(default_factory=SegmentTrainParams)

    def params(self) -> SegmentParams:
        """The :class:`SegmentParams` part, as :func:`segment_slides` takes it."""
        return SegmentParams(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(SegmentParams)}
        )


@dataclass(frozen=True)
class PipelineConfig:
    """A whole run: inputs, outputs and every stage's parameters (the top level of the YAML)."""

    #: Output folder: tiles/, features/<encoder>/, runs/<name>/, predictions/, heatmaps/,
    #: evaluation/ and the resolved config.yaml go here.
    out: Path
    #: Name of the training run (``OUT/runs/<name>/``).
    name: str = "run"
    #: Labels CSV ``slide_id,label[,patient_id][,split]``, or the train.task's format
    #: (docs/tasks.md) (null only with a ``cohort``).
    labels: Path | None = None
    #: Stages to run, in pipeline order; a stage whose outputs are complete is skipped anyway.
    stages: tuple[str, ...] = constrained(STAGES, choices=STAGES)
    #: Slides processed in parallel by tile, predict and heatmap (extraction has its own).
    workers: int = constrained(1, ge=1)
    #: Where the per-slide stages (tile, extract, predict, heatmap, explain) run: this
    #: machine, or a Dask cluster (docs/cluster.md); training stays here.
    executor: ExecutorParams = field(default_factory=ExecutorParams)
    #: Where the slides are and how their resolution is known.
    slides: SlidesSection = field(default_factory=SlidesSection)
    #: Generate a synthetic Camelyon-shaped cohort (slides, annotations, labels) into
    #: ``OUT/cohort`` and use it as input; null: use ``slides`` and ``labels``.
    cohort: CohortParams | None = None
    #: Tissue detection and the tile grid (``wsi-mil tile``) -> OUT/tiles/.
    tiling: TilingParams = field(default_factory=TilingParams)
    #: Tile features from an encoder (``wsi-mil extract``) -> OUT/features/<encoder>/.
    extract: ExtractSection = field(default_factory=ExtractSection)
    #: Attention-MIL training (``wsi-mil train``) -> OUT/runs/<name>/.
    train: TrainParams = field(default_factory=TrainParams)
    #: Prediction with the trained run (``wsi-mil predict``) -> OUT/predictions/.
    predict: PredictSection = field(default_factory=PredictSection)
    #: Heatmaps and exports (``wsi-mil heatmap``) -> OUT/heatmaps/<slide_id>/.
    heatmap: HeatmapParams = field(default_factory=HeatmapParams)
    #: Slide metrics and, with annotations, lesion metrics -> OUT/evaluation/.
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    #: Pixel lesion masks in the tiles the model flags (``wsi-mil segment-train`` and
    #: ``segment``) -> OUT/segmenter/, OUT/segment/<slide_id>/; null: none.
    segment: SegmentSection | None = None
    #: Explanation methods scored against the lesion annotations of ``evaluate`` (``wsi-mil
    #: explain``) -> OUT/explain/; null: none.
    explain: ExplainParams | None = None

    def __post_init__(self) -> None:
        check_fields(self)  # the stages' names, workers >= 1
        if self.cohort is not None:
            if self.slides.inputs or self.labels is not None:
                raise ValueError(
                    "a cohort brings its own slides and labels: leave slides.inputs "
                    "and labels unset, or remove the cohort section"
                )
        else:
            if not self.slides.inputs and "tile" in self.stages:
                raise ValueError(
                    "no slides: set slides.inputs (files or folders), or add a "
                    "cohort section to generate a synthetic cohort"
                )
            if self.labels is None and {"train", "evaluate"} & set(self.stages):
                raise ValueError(
                    "no labels: set labels (a CSV slide_id,label[,patient_id]"
                    "[,split]) to train or evaluate"
                )
            if self.labels is None and self.predict.split and "predict" in self.stages:
                raise ValueError(
                    f"predict.split is {self.predict.split!r} but there are no "
                    f"labels to read the split from: set labels"
                )
        if "cohort" in self.stages and self.cohort is None:
            object.__setattr__(self, "stages", tuple(s for s in self.stages if s != "cohort"))
        if "segment" in self.stages and self.segment is None:
            object.__setattr__(self, "stages", tuple(s for s in self.stages if s != "segment"))
        if "explain" in self.stages and self.explain is None:
            object.__setattr__(self, "stages", tuple(s for s in self.stages if s != "explain"))

    # Where each stage reads and writes: the project folder ``out`` (wsi_mil.project owns the
    # names); the properties below are the config's choices on top (run name, encoder, cohort).
    @property
    def project(self) -> Project:
        return Project(self.out)

    @property
    def cohort_dir(self) -> Path:
        return self.project.cohort_dir

    @property
    def slide_inputs(self) -> tuple[Path, ...]:
        return (self.cohort_dir / "slides",) if self.cohort is not None else self.slides.inputs

    @property
    def labels_csv(self) -> Path | None:
        """The labels CSV; a generated cohort's for the run's task (its survival and
        regression labels are ``labels_<task>.csv``)."""
        if self.cohort is None:
            return self.labels
        task = self.train.task
        return self.cohort_dir / (
            "labels.csv" if task in ("classification", "multilabel") else f"labels_{task}.csv"
        )

    @property
    def annotations_dir(self) -> Path | None:
        if self.evaluate.annotations_dir is not None:
            return self.evaluate.annotations_dir
        return self.cohort_dir / "annotations" if self.cohort is not None else None

    @property
    def tiles_dir(self) -> Path:
        return self.project.tiles_dir

    @property
    def segmenter_dir(self) -> Path:
        """The segmenter's model folder: ``segment.model``, or ``OUT/segmenter`` to train."""
        if self.segment is not None and self.segment.model is not None:
            return self.segment.model
        return self.project.segmenter_dir

    @property
    def segment_dir(self) -> Path:
        return self.project.segment_dir

    @property
    def features_dir(self) -> Path:
        """``OUT/features/<encoder>``."""
        return self.project.features_dir(self.extract.encoder)

    @property
    def run_dir(self) -> Path:
        return self.project.run_dir(self.name)

    @property
    def predictions_dir(self) -> Path:
        """The folder of ``<slide_id>.h5`` predictions (``predictions.csv`` lies beside it)."""
        return self.project.predictions_dir

    @property
    def heatmaps_dir(self) -> Path:
        return self.project.heatmaps_dir

    @property
    def evaluation_dir(self) -> Path:
        return self.project.evaluation_dir

    @property
    def explain_dir(self) -> Path:
        return self.project.explanations_dir


def _absolute(config: PipelineConfig, base: Path) -> PipelineConfig:
    """Every relative path of the config made absolute against ``base`` (the working folder)."""

    def fix(value: Any) -> Any:
        if isinstance(value, Path):
            return value if value.is_absolute() else (base / value).resolve()
        if isinstance(value, tuple):
            return tuple(fix(v) for v in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: fix(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
            }
            return dataclasses.replace(value, **changes)
        return value

    return fix(config)


def parse_config(
    data: Mapping[str, Any], source: str = "<config>", base: Path | None = None
) -> PipelineConfig:
    """A validated :class:`PipelineConfig` from a mapping (as YAML gives it).

    Relative paths are taken from ``base`` (default: the current folder), as the command-line
    verbs take them, and stored absolute so the resolved config is valid from anywhere.
    """
    config = build_dataclass(PipelineConfig, data, where=f"{source}:")
    return _absolute(config, Path.cwd() if base is None else base)


def load_config(
    path: str | os.PathLike, overrides: Mapping[str, Any] | None = None
) -> PipelineConfig:
    """Read and validate a YAML config file; ``overrides`` (e.g. ``{"out": DIR}``) win."""
    data = read_yaml(path)
    for key, value in (overrides or {}).items():
        data[key] = value
    return parse_config(data, source=str(path))


def resolved_config_text(config: PipelineConfig) -> str:
    """The resolved config as YAML: every key, defaults included, paths absolute."""
    return dump_yaml(
        config,
        header="wsi-mil resolved run configuration (every key, defaults "
        "included).\nRe-run with: wsi-mil run THIS_FILE",
    )


def _dataclass_type(annotation: Any) -> type | None:
    """The dataclass inside ``X`` or ``X | None``, if any."""
    options = typing.get_args(annotation) or (annotation,)
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(option, type):
            return option
    return None


def documented_yaml(value: Any, cls: type | None = None, indent: int = 0) -> str:
    """YAML of a dataclass with each key's documentation (:func:`field_comments`) above it.

    Nested dataclasses become indented sections headed by their docstring's first line; a
    section whose value is null is written as null, followed by its keys with their defaults
    commented out, so every key a config may hold is documented in one file.
    """
    cls = cls or type(value)
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    pad = " " * indent
    out: list[str] = []

    def comment(text: str, prefix: str) -> None:
        for line in textwrap.wrap(text, width=max(40, 96 - len(prefix))):
            out.append(f"{prefix}# {line}")

    for f in ordered_fields(cls):
        field_value = getattr(value, f.name)
        section = _dataclass_type(hints[f.name])
        if f.name in comments:
            comment(comments[f.name], pad)
        if section is not None and field_value is not None:
            doc = (section.__doc__ or "").strip().splitlines()
            if f.name not in comments and doc:
                comment(doc[0], pad)
            out.append(f"{pad}{f.name}:")
            out.append(documented_yaml(field_value, section, indent + 2).rstrip("\n"))
            out.append("")
        elif section is not None:
            out.append(f"{pad}{f.name}: null")
            example = documented_yaml(section(), section, 2).rstrip("\n").splitlines()
            out.append(f"{pad}# {f.name}:   (its keys and defaults)")
            out += [f"{pad}#{line}" for line in example if line.strip()]
            out.append("")
        else:
            out.append(f"{pad}{f.name}: {yaml_value(field_value)}")
    return "\n".join(out) + "\n"


DEFAULT_CONFIG_HEADER = """\
wsi-mil run configuration: every key, with its default and what it does.

Copy this file, set out / slides / labels, change what you need and delete the rest (a key
left out keeps its default). Run: wsi-mil run my.yaml (resumable: re-running skips complete
outputs and redoes a stage whose parameters changed). Check a config without running it:
wsi-mil run my.yaml --check. An unknown or misspelt key is an error that names it.
Relative paths are taken from the folder you run wsi-mil in.
This file is generated from the stages' parameter dataclasses: wsi-mil run --print-defaults
"""


def default_config() -> PipelineConfig:
    """The template config: placeholder inputs, every stage at its defaults."""
    return PipelineConfig(
        out=Path("out/my_run"),
        labels=Path("labels.csv"),
        slides=SlidesSection(inputs=(Path("slides"),)),
    )


def default_config_text() -> str:
    """``configs/default.yaml``: :func:`default_config` with every key documented."""
    header = "".join(f"# {line}".rstrip() + "\n" for line in DEFAULT_CONFIG_HEADER.splitlines())
    return header + "\n" + documented_yaml(default_config())
