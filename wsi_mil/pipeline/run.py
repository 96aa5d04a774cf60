"""Every stage from one config (``wsi-mil run CONFIG.yaml``), resuming where a previous run stopped.

The runner owns no stage: :data:`STAGES` is a table of the same stage functions the verbs call
(``tile_slides``, ``extract_slides``, ``train_run``, ``predict_slides``, ``heatmap_slides``,
``evaluate_predictions``, ...), each writing into the config's project folder ``out``
(:class:`wsi_mil.project.Project`), so a config and the equivalent commands give the same files.

Resuming. Every stage already skips slides whose output is complete, so re-running a config
after a crash carries on where it stopped. What a per-file check cannot see is a *changed
parameter*: tiles made with another ``tile_size`` are complete files too. So the runner keeps a
ledger, ``OUT/run_state.json``, of the parameters each stage last ran with and whether it
finished, and decides per stage:

* same parameters as the ledger: resume (complete outputs are skipped);
* changed parameters, or new outputs upstream in this invocation (re-extracted bags make the
  model stale; new predictions make the heatmaps stale): redo the stage's outputs;
* an interrupted redo stays a redo until it finishes, so old and new outputs never mix.

Extraction needs no ledger decision: a bag is redone whenever its tiles, weights or precision
changed (``features.extract.bag_is_current``); predictions likewise follow the checkpoints.
Training is skipped when ``OUT/runs/<name>/summary.json`` exists and nothing it depends on
changed; an interrupted training keeps its complete folds (``train_run(resume=True)``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_mil.errors import WsiMilError

if TYPE_CHECKING:
    from wsi_mil.config.pipeline import PipelineConfig
    from wsi_mil.project import Project


logger = logging.getLogger(__name__)


class PipelineError(WsiMilError, RuntimeError):
    """A stage that could not run at all (bad inputs), as opposed to single failed slides."""


@dataclass
class StageReport:
    """What one stage did in this invocation."""

    stage: str
    summary: str
    seconds: float
    new_outputs: bool  # wrote anything (downstream stages must not trust their old outputs)
    failed: int = 0


@dataclass
class PipelineResult:
    """Every stage's report, and the evaluation's numbers when it ran."""

    config: Any
    stages: list[StageReport] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # slide-level (evaluate)
    lesion: dict[str, Any] = field(default_factory=dict)  # lesion-level summary (annotations)

    @property
    def exit_code(self) -> int:
        return 1 if any(report.failed for report in self.stages) else 0


# --------------------------------------------------------------------------- the ledger


def _stage_params(config: PipelineConfig) -> dict[str, Any]:
    """The parameters whose change makes a stage's existing outputs stale (plain values).

    Settings that change speed, not results (devices, workers, batch sizes, progress bars,
    memory budgets) are left out, so moving a run to a GPU does not redo it.
    """
    from wsi_mil.config.pipeline import to_plain

    train = to_plain(config.train)
    for runtime_only in ("device", "memory_gb", "parallel_folds"):
        train.pop(runtime_only, None)
    return {
        "cohort": to_plain(config.cohort),
        # New slide inputs are simply tiled; a changed mpp or tiling parameter redoes them all.
        "tile": {
            "mpp": config.slides.mpp,
            "mpp_csv": to_plain(config.slides.mpp_csv),
            "tiling": to_plain(config.tiling),
        },
        "train": {
            "train": train,
            "labels": to_plain(config.labels_csv),
            "features": str(config.features_dir),
        },
        "predict": {
            "fold": config.predict.fold,
            "split": config.predict.split,
            "oof": config.predict.oof,
            "run": str(config.run_dir),
        },
        "heatmap": to_plain(config.heatmap),
        "segment": _segment_params(config),
        "explain": {
            "explain": to_plain(config.explain),
            "run": str(config.run_dir),
            "annotations": to_plain(config.annotations_dir),
        },
    }


def _segment_params(config: PipelineConfig) -> Any:
    """The segment section without its runtime-only settings (device, batch size)."""
    from wsi_mil.config.pipeline import to_plain

    section = to_plain(config.segment)
    if section is not None:
        for part in (section, section["train"]):
            part.pop("device", None)
        section.pop("batch_size", None)
    return section


class Ledger:
    """``OUT/run_state.json``: per stage, the parameters it last ran with and if it finished."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise PipelineError(
                    f"{path}: unreadable run state ({exc}); delete it to redo every stage"
                ) from exc

    def must_redo(self, stage: str, params: Any, upstream_changed: bool) -> tuple[bool, str]:
        """(redo everything?, why) for a stage about to run with ``params``.

        ``upstream_changed``: an earlier stage wrote new outputs in this invocation.
        """
        entry = self.entries.get(stage)
        if entry is None:  # never ran here: there is nothing stale to redo
            return False, ""
        if entry.get("params") != params:
            return True, "parameters changed since the last run"
        if upstream_changed:
            return True, "inputs changed upstream"
        if entry.get("redo") and not entry.get("complete"):
            return True, "finishing an interrupted redo"
        return False, ""

    def start(self, stage: str, params: Any, redo: bool) -> None:
        self.entries[stage] = {"params": params, "redo": redo, "complete": False}
        self._save()

    def finish(self, stage: str) -> None:
        self.entries[stage]["complete"] = True
        self._save()

    def _save(self) -> None:
        from tiling.storage import write_text_atomic

        write_text_atomic(self.path, json.dumps(self.entries, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- the stages


@dataclass
class StageRun:
    """What a stage's body gets: the config, its project, whether to redo every output."""

    config: PipelineConfig
    redo: bool
    result: PipelineResult

    @property
    def project(self) -> Project:
        return self.config.project


def _batch(result_of_batch: Any, name: str) -> tuple[str, bool, int]:
    """(summary, wrote anything, failed slides) of a per-slide stage's batch."""
    return (result_of_batch.summary(name), bool(result_of_batch.done), len(result_of_batch.failed))


def _cohort(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.cohort import generate_cohort

    config = run.config
    assert config.cohort is not None  # the cohort stage is scheduled only with a cohort
    slides_dir = config.slide_inputs[0]
    before = {p.name for p in slides_dir.glob("*.tif")}
    cohort = generate_cohort(config.cohort_dir, config.cohort, overwrite=run.redo)
    made = (
        len({s.path.name for s in cohort.slides} - before) if not run.redo else len(cohort.slides)
    )
    n_tumor = sum(s.label == "tumor" for s in cohort.slides)
    return (f"{len(cohort.slides)} slides ({n_tumor} with tumour), {made} generated", made > 0, 0)


def _tile(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.tile import tile_slides

    config = run.config
    return _batch(
        tile_slides(
            list(config.slide_inputs),
            out=run.project,
            params=config.tiling,
            recursive=config.slides.recursive,
            mpp=config.slides.mpp,
            mpp_csv=config.slides.mpp_csv,
            workers=config.workers,
            overwrite=run.redo,
            executor=config.executor,
        ),
        "tile",
    )


def _extract(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.extract import extract_slides

    config = run.config
    return _batch(
        extract_slides(
            config.tiles_dir,
            out=run.project,
            encoder=config.extract.encoder,
            weights=config.extract.weights,
            params=config.extract.params(),
            overwrite=run.redo,
            executor=config.executor,
        ),
        "extract",
    )


def _train(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.train import train_run

    config = run.config
    assert config.labels_csv is not None  # PipelineConfig requires labels to train
    summary_file = config.run_dir / "summary.json"
    if summary_file.is_file() and not run.redo:
        return f"skipped: {summary_file} exists (trained with these parameters)", False, 0
    summary = train_run(
        config.features_dir,
        config.labels_csv,
        out=run.project,
        name=config.name,
        params=config.train,
        resume=not run.redo,
    )
    name = {"multilabel": "macro_auc", "survival": "harrell_c", "regression": "r2"}.get(
        summary.get("task", "classification"), "auc"
    )
    score = summary.get(name, {}).get("mean")
    text = f"{summary['n_folds']} fold(s) -> {config.run_dir}"
    if score is not None:
        text += f", test {name.replace('_', ' ')} {score:.3f} (mean over folds)"
    return text, True, 0


def _predict(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.predict import predict_slides

    config = run.config
    return _batch(
        predict_slides(
            config.run_dir,
            config.features_dir,
            out=run.project,
            params=config.predict.params(),
            labels_csv=config.labels_csv,
            workers=config.workers,
            overwrite=run.redo,
            split=config.predict.split,
            executor=config.executor,
        ),
        "predict",
    )


def _heatmap(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.heatmap import heatmap_slides

    config = run.config
    return _batch(
        heatmap_slides(
            config.predictions_dir,
            out=run.project,
            params=config.heatmap,
            tiles_dir=config.tiles_dir,
            encoder=config.extract.encoder,
            weights=config.extract.weights,
            workers=config.workers,
            overwrite=run.redo,
            executor=config.executor,
        ),
        "heatmap",
    )


def _segment(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.pipeline.segment import segment_slides, segment_train

    config = run.config
    section, model = config.segment, config.segmenter_dir
    assert section is not None  # the segment stage is scheduled only with a segment section
    trained = ""
    if section.model is None and (run.redo or not (model / "model_card.json").is_file()):
        if config.annotations_dir is None:
            raise PipelineError(
                "segment: no lesion annotations to train a segmenter on "
                "(set evaluate.annotations_dir, or segment.model)"
            )
        split = (
            "train"
            if config.labels_csv is not None and read_labels(config.labels_csv).has_split
            else None
        )
        card = segment_train(
            list(config.slide_inputs),
            config.annotations_dir,
            out=run.project,
            params=section.train,
            labels_csv=config.labels_csv,
            split=split,
        )
        trained = (
            f"trained {card['net']} (validation Dice {card['best_val_dice']:.3f}) -> {model}; "
        )
    summary, new_outputs, failed = _batch(
        segment_slides(
            config.predictions_dir,
            model,
            out=run.project,
            params=section.params(),
            workers=config.workers,
            overwrite=run.redo,
            executor=config.executor,
            annotations_dir=config.annotations_dir if section.explain else None,
        ),
        "segment",
    )
    return trained + summary, new_outputs or bool(trained), failed


def _explain(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.explain import explain_slides

    config = run.config
    return _batch(
        explain_slides(
            config.run_dir,
            config.features_dir,
            out=run.project,
            params=config.explain,
            annotations_dir=config.annotations_dir,
            slides_dir=None,
            workers=config.workers,
            overwrite=run.redo,
            executor=config.executor,
        ),
        "explain",
    )


def _evaluate(run: StageRun) -> tuple[str, bool, int]:
    from wsi_mil.pipeline.evaluate import evaluate_cohort

    config = run.config
    if config.labels_csv is None:
        raise PipelineError("evaluate needs labels")
    metrics, lesion = evaluate_cohort(
        config.predictions_dir,
        config.labels_csv,
        section=config.evaluate,
        out=run.project,
        annotations_dir=config.annotations_dir,
        run_dir=config.run_dir,
        features_dir=config.features_dir,
        split=config.predict.split,
        segment_dir=config.segment_dir if config.segment is not None else None,
    )
    run.result.metrics, run.result.lesion = metrics, lesion
    task = metrics.get("task", "classification")
    if task == "classification":
        text = (
            f"{metrics['n_slides']} slides: AUC {_fmt(metrics.get('auc'))}, "
            f"accuracy {_fmt(metrics.get('accuracy'))}"
        )
    elif task == "multilabel":
        text = (
            f"{metrics['n_slides']} slides: macro AUC {_fmt(metrics['macro_auc'])}, "
            f"subset accuracy {_fmt(metrics['subset_accuracy'])}"
        )
    elif task == "survival":
        text = (
            f"{metrics['n_slides']} slides: Harrell's C {_fmt(metrics['harrell_c'])}, "
            f"Uno's C {_fmt(metrics['uno_c'])}, integrated Brier "
            f"{_fmt(metrics['integrated_brier'])}"
        )
    else:
        text = f"{metrics['n_slides']} slides: R² {_fmt(metrics['r2'])}, MAE {_fmt(metrics['mae'])}"
    if lesion:
        seg, explain = lesion["segmentation"], lesion["explain"]
        text += (
            f"; FROC {_fmt(lesion['froc'])}, tile Dice {_fmt(seg['dice'])}, "
            f"pointing game {_fmt(explain['pointing_game'])} "
            f"({lesion['n_tumour_annotated']} annotated tumour slides)"
        )
        pixel = lesion.get("pixel_segmentation")
        if pixel:
            text += (
                f"; pixel Dice {_fmt(pixel['mask']['dice'])} (tile head "
                f"{_fmt(pixel['tile_head']['dice'])} on the same pixels)"
            )
    return text, False, 0


@dataclass(frozen=True)
class Stage:
    """One row of the pipeline: its name and its body, which takes its inputs from the
    project and writes its outputs there."""

    name: str
    body: Callable[[StageRun], tuple[str, bool, int]]  # (summary, wrote anything, failed)
    #: whether the ledger decides if it is redone (extract and evaluate need no ledger:
    #: extraction checks each bag against its tiles and weights, evaluation is always redone)
    tracked: bool = True


#: the stages in the order they run; a stage runs when the config schedules it
#: (``PipelineConfig.stages``: a config without a cohort, segment or explain section drops it)
STAGES = (
    Stage("cohort", _cohort),  # the cohort section -> cohort/
    Stage("tile", _tile),  # slides -> tiles/
    Stage("extract", _extract, tracked=False),  # tiles/ -> features/<encoder>/
    Stage("train", _train),  # features/<encoder>/, labels -> runs/<name>/
    Stage("predict", _predict),  # runs/<name>/, features -> predictions/, predictions.csv
    Stage("heatmap", _heatmap),  # predictions/, tiles/ -> heatmaps/
    Stage("segment", _segment),  # predictions/, slides, annotations -> segmenter/, segment/
    Stage("explain", _explain),  # runs/<name>/, features/<encoder>/ -> explain/
    Stage("evaluate", _evaluate, tracked=False),  # predictions, labels -> evaluation/
)


def run_pipeline(config: PipelineConfig, *, overwrite: bool = False) -> PipelineResult:
    """Run the configured stages of :data:`STAGES` in order; see the module docstring for how
    it resumes.

    Stages with failed slides carry on (the failures are in the project's ``failures.csv`` and
    make the exit code non-zero); a stage that cannot run at all raises.
    """
    from tiling.storage import write_text_atomic
    from wsi_mil.config.pipeline import resolved_config_text
    from wsi_mil.executors import executor_session

    project = config.project
    project.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(project.config_file, resolved_config_text(config))
    ledger = Ledger(project.state_file)
    params = _stage_params(config)
    result = PipelineResult(config=config)
    upstream_changed = False
    # One Dask client (and cluster) for every stage: workers keep their encoders loaded.
    with executor_session(config.executor):
        for stage in STAGES:
            if stage.name not in config.stages:
                continue
            ledger_params = params[stage.name] if stage.tracked else None
            redo, why = (overwrite, "--overwrite") if overwrite else (False, "")
            if stage.tracked and not overwrite:
                redo, why = ledger.must_redo(stage.name, ledger_params, upstream_changed)
            if redo:
                logger.info("[%s] redoing every output: %s", stage.name, why)
            if stage.tracked:
                ledger.start(stage.name, ledger_params, redo)
            started = time.perf_counter()
            summary, new_outputs, failed = stage.body(StageRun(config, redo, result))
            report = StageReport(
                stage.name, summary, time.perf_counter() - started, new_outputs, failed
            )
            result.stages.append(report)
            logger.info("[%s] %s (%.1f s)", stage.name, summary, report.seconds)
            if stage.tracked:
                ledger.finish(stage.name)
            upstream_changed = upstream_changed or new_outputs
    return result


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"
