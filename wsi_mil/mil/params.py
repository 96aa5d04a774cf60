"""Training and prediction parameters, kept free of torch so that building the command line and
reading a config stay instant. Each field's ``#:`` comment is its documentation (``--help`` and
``configs/default.yaml`` are generated from it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

#: MIL model used when none is named (Ilse et al. 2018 gated attention, as in CLAM).
DEFAULT_MODEL = "gated_abmil"
SCHEDULES = ("cosine", "plateau", "none")
MONITORS = ("loss", "auc", "none")
OPTIMIZERS = ("adamw", "adam", "sgd")
#: positional information of ``transformer_mil`` (see ``models.transformers.TransformerMIL``).
POSITIONAL = ("none", "sincos2d")
#: what a run learns from the labels CSV (docs/tasks.md): one class per slide, several 0/1
#: targets per slide, a time to an event, or a number.
TASKS = ("classification", "multilabel", "survival", "regression")
SURVIVAL_LOSSES = ("cox", "nll")
REGRESSION_LOSSES = ("mse", "huber")
BAG_LEVELS = ("slide", "patient")


@dataclass(frozen=True)
class TrainParams:
    """Every setting of ``wsi-mil train`` (the ``train:`` section of a YAML config)."""

    #: MIL model (registry name): gated_abmil, abmil, clam_sb, clam_mb, mean_pool, max_pool,
    #: transformer_mil, transmil.
    model: str = DEFAULT_MODEL
    #: what the labels CSV holds and the model learns (docs/tasks.md): "classification" (one
    #: class per slide, the label column), "multilabel" (several 0/1 targets per slide, one
    #: column each), "survival" (time and event columns) or "regression" (a number per slide)
    task: Literal["classification", "multilabel", "survival", "regression"] = "classification"
    #: multilabel: the labels CSV's 0/1 target columns (empty: every column but slide_id,
    #: patient_id and split); regression: the column of the number to predict (empty: target)
    targets: tuple[str, ...] = ()
    #: survival: "cox" (Cox partial likelihood over mini-batches of cox_batch_size bags) or "nll"
    #: (the discrete-time negative log-likelihood of Zadeh & Schmid 2020 over survival_bins)
    survival_loss: Literal["cox", "nll"] = "cox"
    #: survival with nll: time intervals, cut at quantiles of the training slides' event times
    survival_bins: int = 4
    #: survival with cox: bags whose risks make one partial likelihood (one optimiser step): a
    #: bag's risk set is the bags of its mini-batch still event-free at its time
    cox_batch_size: int = 16
    #: regression: "mse" or "huber" (quadratic within huber_delta training standard deviations
    #: of the target, linear beyond: robust to a few wild values)
    regression_loss: Literal["mse", "huber"] = "mse"
    #: regression with huber: where the loss turns from quadratic to linear, in training
    #: standard deviations of the target
    huber_delta: float = 1.0
    #: "slide": one bag per slide; "patient": one bag per patient_id pooling all of its slides'
    #: tiles (each tile keeps its slide; heatmaps go back to each slide)
    bag_level: Literal["slide", "patient"] = "slide"
    hidden_dims: tuple[int, ...] = (512,)  # widths of the tile embedding MLP
    attention_dim: int = 256  # width of the attention network
    #: dropout in the embedding and attention networks. MI-Net's 0.5 scores higher on the classic
    #: MIL benchmarks and no lower on the UCSB images, but kept narrow networks trained on a few
    #: bags from learning at all (docs/benchmarks.md, "Classic MIL benchmarks"): 0.5 is a
    #: choice, not the default.
    dropout: float = 0.25
    k_sample: int = 8  # top/bottom-k tiles for CLAM's instance loss and head pseudo-labels
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
    positional: Literal["none", "sincos2d"] = "none"
    bag_weight: float = 0.7  # CLAM: weight of the slide loss against the instance loss
    seg_weight: float = 0.5  # weight of the segmentation-head loss
    tile_label_threshold: float = 0.5  # lesion fraction from which a tile label is positive
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
    folds: int = 5  # cross-validation folds (ignored when the labels CSV has a split column)
    val_fraction: float = 0.2  # share of each fold's training patients kept for validation
    epochs: int = 50  # maximum epochs per fold
    lr: float = 5e-4  # peak learning rate
    #: L2 (Adam, SGD) or decoupled (AdamW) weight decay. Strong L2 against overfitting small
    #: cohorts: AdamW at 2e-4 with 1e-4 (the previous default) overfit 180 training bags before
    #: epoch 20 (every fold kept the ``min_epochs`` floor) and scored Tiger 0.785 against 0.845
    #: published (docs/benchmarks.md, "Classic MIL benchmarks"; ``scripts/bench_train_rules.py``
    #: screens the alternatives).
    weight_decay: float = 5e-3
    #: adam (L2 in the gradient: the setting of Ilse et al. 2018's appendix) | adamw | sgd
    #: (Nesterov momentum 0.9: MI-Net's optimiser, which scripts/bench_mil_classic.py uses; with
    #: the default lr it learns too slowly for a few dozen bags: the demo's tile Dice fell from
    #: 0.855 to 0.000)
    optimizer: str = "adam"
    schedule: str = "cosine"  # cosine | plateau | none
    patience: int = 10  # epochs without validation improvement before stopping
    #: epochs always trained before the best epoch is looked for: an epoch before this is never
    #: kept, however low its validation loss (on a few dozen validation slides an underfit
    #: early epoch can win by chance: with 5, half the folds of a 100-slide cohort kept epoch
    #: 1-3), and stopping can only come after it. 20 epochs of a small cohort are ~1 000 steps.
    min_epochs: int = 20
    #: what early stopping and model selection watch on the validation slides: the slide-level
    #: loss (``loss``; never the segmentation head's or CLAM's instance loss, whose targets are
    #: the model's own pseudo-labels), the slide ``auc`` (the task's score: multilabel macro
    #: AUC, survival Harrell's C, regression R²), or ``none`` (keep the last epoch).
    monitor: str = "loss"
    #: pooled validation slides of each class needed to choose the decision threshold (Youden's
    #: J on every fold's validation predictions together); with fewer, the threshold is 0.5.
    threshold_min_per_class: int = 20
    batch_size: int = 1  # bags per step (padded and masked when > 1)
    #: weight each bag's slide loss by its class's inverse frequency in the fold's training
    #: bags (multilabel: each target's positives and negatives), with a fixed normaliser (the
    #: bag count), in training and in the validation loss that picks the epoch (survival and
    #: regression: no weights)
    class_weighting: bool = True
    #: classification: fit a temperature (Guo et al. 2017) on each fold's validation slides and
    #: apply it to that fold's probabilities before thresholds are chosen (rankings and AUC are
    #: unchanged; ECE and the Brier score show the effect)
    calibrate: bool = False
    max_train_tiles: int | None = None  # random tiles per training bag per step (None: all)
    memory_gb: float = 8.0  # hold bags in memory (float16) when they fit, else stream
    seed: int = 0  # seeds splits, initialisation, shuffling and tile sampling
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bootstrap: int = 1000  # bootstrap resamples for the AUC confidence interval (0: none)
    # Folds trained at once, each in its own process of a Dask LocalCluster on this machine
    # (1: one after another, here); a fold's files are the same either way.
    parallel_folds: int = 1

    def __post_init__(self) -> None:
        from wsi_mil.mil.model_names import MODEL_NAMES  # the registry's names, without torch

        checks = {
            "model": (self.model in MODEL_NAMES, f"one of {list(MODEL_NAMES)}"),
            "task": (self.task in TASKS, f"one of {TASKS}"),
            "survival_loss": (self.survival_loss in SURVIVAL_LOSSES, f"one of {SURVIVAL_LOSSES}"),
            "regression_loss": (self.regression_loss in REGRESSION_LOSSES,
                                f"one of {REGRESSION_LOSSES}"),
            "bag_level": (self.bag_level in BAG_LEVELS, f"one of {BAG_LEVELS}"),
            "survival_bins": (self.survival_bins >= 2, ">= 2"),
            "cox_batch_size": (self.cox_batch_size >= 2, ">= 2"),
            "huber_delta": (self.huber_delta > 0, "> 0"),
            "negative_class": (not (self.subtyping and self.negative_class is not None),
                               "None when subtyping is on (subtypes have no negative class)"),
            "calibrate": (not self.calibrate or self.task == "classification",
                          "false unless task is classification"),
            "schedule": (self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            "monitor": (self.monitor in MONITORS, f"one of {MONITORS}"),
            "optimizer": (self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            "missing_bags": (self.missing_bags in ("skip", "error"), "skip or error"),
            "positional": (self.positional in POSITIONAL
                           and (self.positional == "none" or self.model == "transformer_mil"),
                           f"one of {POSITIONAL}, and 'none' unless model is transformer_mil"),
            "hidden_dims": (self.positional == "none"
                            or (len(self.hidden_dims) > 0 and int(self.hidden_dims[-1]) % 4 == 0),
                            "a last width divisible by 4 with positional sincos2d"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "parallel_folds": (self.parallel_folds >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "k_sample": (self.k_sample >= 1, ">= 1"),
            "min_epochs": (1 <= self.min_epochs, ">= 1"),
            "threshold_min_per_class": (self.threshold_min_per_class >= 1, ">= 1"),
            "bag_weight": (0 <= self.bag_weight <= 1, "in [0, 1]"),
            "max_train_tiles": (self.max_train_tiles is None or self.max_train_tiles >= 1,
                                ">= 1 or None"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"TrainParams.{name} = {getattr(self, name)!r}: must be {expected}")
        object.__setattr__(self, "hidden_dims", tuple(int(w) for w in self.hidden_dims))
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        if self.task == "regression" and len(self.targets) > 1:
            raise ValueError(f"TrainParams.targets = {self.targets!r}: regression predicts one "
                             f"column, name at most one")

    def model_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"hidden_dims": self.hidden_dims,
                                  "attention_dim": self.attention_dim, "dropout": self.dropout}
        if self.model.startswith("clam"):
            kwargs.update(k_sample=self.k_sample, subtyping=self.subtyping)
        if self.model == "transformer_mil":
            kwargs.update(positional=self.positional)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        out["targets"] = list(self.targets)
        return out



@dataclass(frozen=True)
class PredictParams:
    """Settings of ``wsi-mil predict`` (the ``predict:`` section of a YAML config)."""

    #: One fold's model; None: the ensemble of every fold.
    fold: int | None = None
    #: Out-of-fold prediction of a cross-validated run's own slides: each slide the run held out
    #: in a fold is predicted by that fold's model only, never by a model that trained on it.
    #: None (auto): out-of-fold for such slides, the chosen fold(s) for every other slide;
    #: true: fail a slide that no fold held out; false: always the chosen fold(s) (slides the
    #: model trained on are then marked in_sample, and evaluate warns).
    oof: bool | None = None
    #: Tiles per chunk (bounds memory on very large slides).
    chunk_size: int = 16384
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"

