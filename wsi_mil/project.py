"""The project folder: the one place that knows where each stage's files go.

A project is one folder that every stage fills, in the order the data flows::

    PROJECT/
      cohort/                  a generated cohort (slides/, annotations/, labels*.csv)
      tiles/                   <slide_id>.h5, .tissue.geojson, .preview.png      (tile)
      features/<encoder>/      <slide_id>.h5 feature bags                         (extract)
      runs/<name>/             a trained run: config, splits, folds, summary      (train)
      predictions/             <slide_id>.h5 per slide                            (predict)
      predictions.csv          one row per slide                                   (predict)
      heatmaps/<slide_id>/     overlays, exports                                  (heatmap)
      explain/<slide_id>/      explanations.h5 and figures                        (explain)
      segmenter/               a trained pixel segmenter                    (segment-train)
      segment/<slide_id>/      pixel masks inside flagged tiles                   (segment)
      report/                  per-slide reports                                   (report)
      evaluation/              metrics and figures                               (evaluate)
      ratings/                 the viewer's expert ratings                           (view)
      config.yaml  run_state.json  failures.csv

Every stage function writes into a project (its keyword ``out``); on the command line a folder
flag names what the folder holds (``--tiles``, ``--features``, ``--run``, ``--predictions``,
``--heatmaps``, ...) and ``--out`` is a project folder, so a folder argument means one thing
everywhere. A folder given explicitly replaces the project's own for that folder only:
``Project(root, heatmaps=elsewhere)`` (``features``: the folder of one encoder's bags).

This module imports nothing heavy (no torch, no h5py): the runner's ``--check``, the viewer and
the command line use it before any stage runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from features.params import bag_folder_name

#: the folders and files of a project, by what they hold (the names on disk)
TILES = "tiles"
FEATURES = "features"
RUNS = "runs"
PREDICTIONS = "predictions"
PREDICTIONS_CSV = "predictions.csv"
HEATMAPS = "heatmaps"
EXPLANATIONS = "explain"
SEGMENTER = "segmenter"
SEGMENT = "segment"
REPORT = "report"
EVALUATION = "evaluation"
RATINGS = "ratings"
COHORT = "cohort"
CONFIG_FILE = "config.yaml"
STATE_FILE = "run_state.json"
FAILURES_CSV = "failures.csv"

#: folders that may be given explicitly instead of the project's own (``Project(root, X=...)``)
_FOLDERS = {
    "tiles": TILES,
    "features": FEATURES,
    "runs": RUNS,
    "predictions": PREDICTIONS,
    "heatmaps": HEATMAPS,
    "explanations": EXPLANATIONS,
    "segmenter": SEGMENTER,
    "segment": SEGMENT,
    "report": REPORT,
    "evaluation": EVALUATION,
    "ratings": RATINGS,
    "cohort": COHORT,
}


class Project:
    """A project folder (``root``) and where each stage reads and writes inside it.

    ``overrides`` maps a folder's name (``"predictions"``, ``"heatmaps"``, ...: the keys of the
    constructor keywords of :meth:`with_folders`) to a folder elsewhere, given by the user.
    """

    __slots__ = ("overrides", "root")

    def __init__(self, root: str | os.PathLike, **folders: str | os.PathLike | None):
        unknown = sorted(set(folders) - set(_FOLDERS))
        if unknown:
            raise TypeError(
                f"Project: unknown folder(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(_FOLDERS))}"
            )
        self.root = Path(root)
        self.overrides = {
            name: Path(folder) for name, folder in folders.items() if folder is not None
        }

    @classmethod
    def of(cls, project: str | os.PathLike | Project) -> Project:
        """``project`` itself, or the project at that folder."""
        return project if isinstance(project, Project) else cls(project)

    def with_folders(self, **folders: str | os.PathLike | None) -> Project:
        """This project with the folders given (those that are not None) elsewhere."""
        return Project(self.root, **{**self.overrides, **folders})

    def _folder(self, name: str) -> Path:
        return self.overrides.get(name, self.root / _FOLDERS[name])

    # --- what the stages write, in pipeline order
    @property
    def cohort_dir(self) -> Path:
        """A generated cohort (``generate_cohort``): slides, lesion annotations, labels."""
        return self._folder("cohort")

    @property
    def tiles_dir(self) -> Path:
        """``tiles/<slide_id>.h5`` (+ tissue GeoJSON and preview PNG) of ``tile``."""
        return self._folder("tiles")

    def features_dir(self, encoder: str) -> Path:
        """``features/<encoder>/``: the feature bags ``extract`` writes with ``encoder`` (a
        ``features`` folder given explicitly is that folder of bags itself, as ``--features``
        is in every verb)."""
        if "features" in self.overrides:
            return self.overrides["features"]
        return self.root / FEATURES / bag_folder_name(encoder)

    @property
    def runs_dir(self) -> Path:
        return self._folder("runs")

    def run_dir(self, name: str) -> Path:
        """``runs/<name>/``: a run of ``train``."""
        return self.runs_dir / name

    @property
    def predictions_dir(self) -> Path:
        """``predictions/<slide_id>.h5`` of ``predict``."""
        return self._folder("predictions")

    @property
    def predictions_csv(self) -> Path:
        """``predictions.csv`` (one row per slide), beside ``predictions/``."""
        return self.predictions_dir.parent / PREDICTIONS_CSV

    @property
    def heatmaps_dir(self) -> Path:
        """``heatmaps/<slide_id>/`` of ``heatmap``."""
        return self._folder("heatmaps")

    @property
    def explanations_dir(self) -> Path:
        """``explain/<slide_id>/explanations.h5`` (+ figures, the cohort table) of ``explain``."""
        return self._folder("explanations")

    @property
    def segmenter_dir(self) -> Path:
        """The pixel segmenter ``segment-train`` writes."""
        return self._folder("segmenter")

    @property
    def segment_dir(self) -> Path:
        """``segment/<slide_id>/`` of ``segment``."""
        return self._folder("segment")

    @property
    def report_dir(self) -> Path:
        """``report/`` of ``report``."""
        return self._folder("report")

    @property
    def evaluation_dir(self) -> Path:
        """Metrics and figures of ``evaluate`` (the verb's default, as in a pipeline run)."""
        return self._folder("evaluation")

    @property
    def ratings_dir(self) -> Path:
        """The viewer's expert ratings."""
        return self._folder("ratings")

    # --- the project's own files
    @property
    def config_file(self) -> Path:
        """The resolved config of ``wsi-mil run``."""
        return self.root / CONFIG_FILE

    @property
    def state_file(self) -> Path:
        """The runner's ledger (which stage ran with which parameters)."""
        return self.root / STATE_FILE

    @property
    def failures_csv(self) -> Path:
        """The slides that failed, per stage (slide, stage, error)."""
        return self.root / FAILURES_CSV

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Project)
            and self.root == other.root
            and self.overrides == other.overrides
        )

    def __hash__(self) -> int:
        return hash((self.root, tuple(sorted(self.overrides.items()))))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={str(v)!r}" for k, v in self.overrides.items())
        return f"Project({str(self.root)!r}{extra})"
