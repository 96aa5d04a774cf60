"""Training and prediction parameters, kept free of torch so that building the command line and
reading a config stay instant. Each field's ``#:`` comment is its documentation (``--help`` and
``configs/default.yaml`` are generated from it).
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass
from typing import Any, Literal

from features.params import device_field
from wsi_mil.config.schema import check_fields, constrained
from wsi_mil.metrics.params import lesion_fraction_field
from wsi_mil.mil.model_names import MODEL_NAMES

#: MIL model used when none is named (Ilse et al. 2018 gated attention, as in CLAM).
DEFAULT_MODEL = "gated_abmil"
#: positional information of ``transformer_mil`` (see ``models.transformers.TransformerMIL``).
Positional = Literal["none", "sincos2d"]
POSITIONAL: tuple[str, ...] = typing.get_args(Positional)
#: what a run learns from the labels CSV (docs/tasks.md): one class per slide, several 0/1
#: targets per slide, a time to an event, or a number.
TaskKind = Literal["classification", "multilabel", "survival", "regression"]
TASKS: tuple[str, ...] = typing.get_args(TaskKind)

#: The tile probability (of the positive class, from the MIL segmentation head) at or above
#: which a tile is positive: the segmentation of heatmaps, GeoJSON regions and the lesion
#: evaluation, and the tiles sent to the pixel segmenter. One definition for every stage.
POSITIVE_TILE_THRESHOLD = 0.5


def positive_tile_threshold_field() -> Any:
    """The positive-tile threshold field of every stage that cuts the tile probabilities."""
    return constrained(
        POSITIVE_TILE_THRESHOLD,
        ge=0.0,
        le=1.0,
        doc=(
            "tile probability (of the positive class, from the MIL segmentation head) at or above "
            "which a tile is positive (segmented as lesion)"
        ),
    )


def attended_tile_threshold_field() -> Any:
    """The attention cut of every stage that reports the attended region (the slide report,
    the lesion evaluation's region report)."""
    return constrained(
        0.5,
        ge=0.0,
        le=1.0,
        doc="normalised attention (0..1) at or above which a tile counts as attended",
    )


def positive_class_field() -> Any:
    """The ``positive_class`` field of every stage that reads the lesion map: one rule,
    :meth:`wsi_mil.mil.predictions.SlidePrediction.positive_index`."""
    return constrained(
        None,
        doc=(
            "class whose tile probability is the lesion map; null: the class that is not the run's "
            "negative class (for subtypes the predicted class, for multilabel the most probable "
            "target)"
        ),
    )


@dataclass(frozen=True)
class TrainParams:
    """Every setting of ``wsi-mil train`` (the ``train:`` section of a YAML config)."""

    #: MIL model, by its registry name.
    model: str = constrained(DEFAULT_MODEL, choices=MODEL_NAMES)
    #: what the labels CSV holds and the model learns (docs/tasks.md): "classification" (one
    #: class per slide, the label column), "multilabel" (several 0/1 targets per slide, one
    #: column each), "survival" (time and event columns) or "regression" (a number per slide)
    task: TaskKind = "classification"
    #: multilabel: the labels CSV's 0/1 target columns (empty: every column but slide_id,
    #: patient_id and split); regression: the column of the number to predict (empty: target)
    targets: tuple[str, ...] = ()
    #: survival: "cox" (Cox partial likelihood over mini-batches of cox_batch_size bags) or "nll"
    #: (the discrete-time negative log-likelihood of Zadeh & Schmid 2020 over survival_bins)
    survival_loss: Literal["cox", "nll"] = "cox"
    #: survival with nll: time intervals, cut at quantiles of the training slides' event times
    survival_bins: int = constrained(4, ge=2)
    #: survival with cox: bags whose risks make one partial likelihood (one optimiser step): a
    #: bag's risk set is the bags of its mini-batch still event-free at its time
    cox_batch_size: int = constrained(16, ge=2)
    #: regression: "mse" or "huber" (quadratic within huber_delta training standard deviations
    #: of the target, linear beyond: robust to a few wild values)
    regression_loss: Literal["mse", "huber"] = "mse"
    #: regression with huber: where the loss turns from quadratic to linear, in training
    #: standard deviations of the target
    huber_delta: float = constrained(1.0, gt=0)
    #: "slide": one bag per slide; "patient": one bag per patient_id pooling all of its slides'
    #: tiles (each tile keeps its slide; heatmaps go back to each slide)
    bag_level: Literal["slide", "patient"] = "slide"
    hidden_dims: tuple[int, ...] = constrained((512,), ge=1)  # widths of the tile embedding MLP
    attention_dim: int = constrained(256, ge=1)  # width of the attention network
    #: dropout in the embedding and attention networks. MI-Net's 0.5 scores higher on the classic
    #: MIL benchmarks and no lower on the UCSB images, but kept narrow networks trained on a few
    #: bags from learning at all (docs/benchmarks.md, "Classic MIL benchmarks"): 0.5 is a
    #: choice, not the default.
    dropout: float = constrained(0.25, ge=0, lt=1)
    #: top/bottom-k tiles for CLAM's instance loss and head pseudo-labels
    k_sample: int = constrained(8, ge=1)
    #: classification: the classes are subtypes and none is lesion-free (luad/lusc,
    #: benign/malignant taken as two tissue types): no negative class, the segmentation head
    #: learns each class's tiles against the other classes' (one-vs-rest), and CLAM's instance
    #: loss also pushes the other classes' top tiles to "not this class" (CLAM's subtyping).
    #: Also taken when no class has a negative name and negative_class is not given.
    subtyping: bool = False
    #: transformer_mil only: the tiles' positions on the slide, "none" (the model sees a set of
    #: tiles) or "sincos2d" (a fixed 2-D sine-cosine embedding of each tile's grid position,
    #: relative to the corner of the bag's bounding box, added to its token; the last hidden
    #: width must be divisible by 4). The prediction stays independent of the tiles' order either way.
    positional: Positional = "none"
    #: CLAM: weight of the slide loss against the instance loss
    bag_weight: float = constrained(0.7, ge=0, le=1)
    seg_weight: float = constrained(0.5, ge=0)  # weight of the segmentation-head loss
    tile_label_threshold: float = lesion_fraction_field()
    #: Train the segmentation head on the bags' annotation-derived ``tile_labels`` where a bag
    #: has them (tile-level supervision); false: from slide labels only (weak supervision),
    #: even when tile labels are there.
    use_tile_labels: bool = True
    #: Class whose slides hold no lesion (all their tiles negative); None: recognised from its
    #: name (normal, negative, benign, none, 0, ...), else none (the classes are subtypes, see
    #: subtyping).
    negative_class: str | None = None
    #: Labelled slides without a feature bag (their tiling or extraction failed): "skip" leaves
    #: them out with a warning that lists them, "error" stops.
    missing_bags: Literal["skip", "error"] = "skip"
    #: cross-validation folds (ignored when the labels CSV has a split column)
    folds: int = constrained(5, ge=1)
    #: share of each fold's training patients kept for validation
    val_fraction: float = constrained(0.2, ge=0, lt=1)
    epochs: int = constrained(50, ge=1)  # maximum epochs per fold
    lr: float = constrained(5e-4, gt=0)  # peak learning rate
    #: L2 (Adam, SGD) or decoupled (AdamW) weight decay. Strong L2 against overfitting small
    #: cohorts: AdamW at 2e-4 with 1e-4 (the previous default) overfit 180 training bags before
    #: epoch 20 (every fold kept the ``min_epochs`` floor) and scored Tiger 0.785 against 0.845
    #: published (docs/benchmarks.md, "Classic MIL benchmarks"; ``scripts/bench_train_rules.py``
    #: screens the alternatives).
    weight_decay: float = constrained(5e-3, ge=0)
    #: adam (L2 in the gradient: the setting of Ilse et al. 2018's appendix) | adamw | sgd
    #: (Nesterov momentum 0.9: MI-Net's optimiser, which scripts/bench_mil_classic.py uses; with
    #: the default lr it learns too slowly for a few dozen bags: the demo's tile Dice fell from
    #: 0.855 to 0.000)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    schedule: Literal["cosine", "plateau", "none"] = "cosine"  # cosine | plateau | none
    patience: int = constrained(10, ge=1)  # epochs without validation improvement before stopping
    #: epochs always trained before the best epoch is looked for: an epoch before this is never
    #: kept, however low its validation loss (on a few dozen validation slides an underfit
    #: early epoch can win by chance: with 5, half the folds of a 100-slide cohort kept epoch
    #: 1-3), and stopping can only come after it. 20 epochs of a small cohort are ~1 000 steps.
    min_epochs: int = constrained(20, ge=1)
    #: what early stopping and model selection watch on the validation slides: the slide-level
    #: loss (``loss``; never the segmentation head's or CLAM's instance loss, whose targets are
    #: the model's own pseudo-labels), the slide ``auc`` (the task's score: multilabel macro
    #: AUC, survival Harrell's C, regression R²), or ``none`` (keep the last epoch).
    monitor: Literal["loss", "auc", "none"] = "loss"
    #: pooled validation slides of each class needed to choose the decision threshold (Youden's
    #: J on every fold's validation predictions together); with fewer, the threshold is 0.5.
    threshold_min_per_class: int = constrained(20, ge=1)
    batch_size: int = constrained(1, ge=1)  # bags per step (padded and masked when > 1)
    #: weight each bag's slide loss by its class's inverse frequency in the fold's training
    #: bags (multilabel: each target's positives and negatives), with a fixed normaliser (the
    #: bag count), in training and in the validation loss that picks the epoch (survival and
    #: regression: no weights)
    class_weighting: bool = True
    #: classification: fit a temperature (Guo et al. 2017) on each fold's validation slides and
    #: apply it to that fold's probabilities before thresholds are chosen (rankings and AUC are
    #: unchanged; ECE and the Brier score show the effect)
    calibrate: bool = False
    #: random tiles per training bag per step (None: all)
    max_train_tiles: int | None = constrained(None, ge=1)
    #: hold bags in memory (float16) when they fit, else stream
    memory_gb: float = constrained(8.0, ge=0)
    seed: int = 0  # seeds splits, initialisation, shuffling and tile sampling
    device: str = device_field()
    #: bootstrap resamples for the AUC confidence interval (0: none)
    bootstrap: int = constrained(1000, ge=0)
    # Folds trained at once, each in its own process of a Dask LocalCluster on this machine
    # (1: one after another, here); a fold's files are the same either way.
    parallel_folds: int = constrained(1, ge=1)

    def __post_init__(self) -> None:
        check_fields(self)  # every Literal and range above
        checks = {
            "negative_class": (
                not (self.subtyping and self.negative_class is not None),
                "None when subtyping is on (subtypes have no negative class)",
            ),
            "calibrate": (
                not self.calibrate or self.task == "classification",
                "false unless task is classification",
            ),
            "positional": (
                self.positional == "none" or self.model == "transformer_mil",
                "'none' unless model is transformer_mil",
            ),
            "hidden_dims": (
                self.positional == "none"
                or (len(self.hidden_dims) > 0 and int(self.hidden_dims[-1]) % 4 == 0),
                "a last width divisible by 4 with positional sincos2d",
            ),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(
                    f"TrainParams.{name} = {getattr(self, name)!r}: must be {expected}"
                )
        object.__setattr__(self, "hidden_dims", tuple(int(w) for w in self.hidden_dims))
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        if self.task == "regression" and len(self.targets) > 1:
            raise ValueError(
                f"TrainParams.targets = {self.targets!r}: regression predicts one "
                f"column, name at most one"
            )

    def model_kwargs(self) -> dict[str, Any]:
        """Every model setting; :func:`wsi_mil.mil.models.create_model` gives each model the ones
        it accepts (CLAM the ``k_sample`` and ``subtyping``, ``transformer_mil`` the
        ``positional``), so a new model's settings are added here and in its module only."""
        return {
            "hidden_dims": self.hidden_dims,
            "attention_dim": self.attention_dim,
            "dropout": self.dropout,
            "k_sample": self.k_sample,
            "subtyping": self.subtyping,
            "positional": self.positional,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        out["targets"] = list(self.targets)
        return out


@dataclass(frozen=True)
class PredictParams:
    """Settings of ``wsi-mil predict`` (the ``predict:`` section of a YAML config)."""

    #: One fold's model; None: the ensemble of every fold.
    fold: int | None = constrained(None, ge=0)
    #: Out-of-fold prediction of a cross-validated run's own slides: each slide the run held out
    #: in a fold is predicted by that fold's model only, never by a model that trained on it.
    #: None (auto): out-of-fold for such slides, the chosen fold(s) for every other slide;
    #: true: fail a slide that no fold held out; false: always the chosen fold(s) (slides the
    #: model trained on are then marked in_sample, and evaluate warns).
    oof: bool | None = None
    #: Tiles per chunk (bounds memory on very large slides).
    chunk_size: int = constrained(16384, ge=1)
    device: str = device_field()

    def __post_init__(self) -> None:
        check_fields(self)
