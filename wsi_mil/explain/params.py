"""Settings of the explain stage (``wsi-mil explain``, the ``explain:`` YAML section).

Standard library only, so that building the command line and reading a config stay instant;
each field's ``#:`` comment is its documentation (``--help`` and the YAML reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tiling.params import AnnotationParams
from wsi_mil.metrics.params import FrocParams

#: every explanation method, in the order of the tables (kept here so the CLI needs no torch).
METHOD_NAMES = ("attention", "rollout", "chefer_iccv2021", "chefer_cvpr2021", "lrp",
                "gradient_x_input", "integrated_gradients", "attention_x_gradient",
                "perturbation", "keep_one", "segmentation", "random")
#: names an earlier release used, and what they are called now.
RENAMED = {"relevance": "chefer_iccv2021"}


@dataclass(frozen=True)
class ExplainParams:
    """What ``wsi-mil explain`` computes for each slide and how it scores it."""

    #: methods to run (default: every method the run's model supports)
    methods: tuple[str, ...] = ()
    #: class explained; None: the class that is not the run's negative class (two classes),
    #: else the predicted class of each slide
    target: str | None = None
    #: fold whose model explains every slide; None: out of fold, each slide by the fold model
    #: that held it out (as wsi-mil predict chooses), slides no fold held out by fallback_fold
    fold: int | None = None
    #: fold that explains, out of fold, the slides no fold held out (or that every fold held
    #: out, as an external test set); slides it trained on are in sample
    fallback_fold: int = 0
    #: integration steps of integrated_gradients
    ig_steps: int = 32
    #: largest bag on which a transformer's n x n attention matrices are built (rollout,
    #: chefer_iccv2021, chefer_cvpr2021, attention_x_gradient); larger bags fail with a clear
    #: error
    max_quadratic_tiles: int = 8000
    #: largest bag on which a transformer runs perturbation (a forward pass per tile left out,
    #: cubic in the bag for exact attention) and TransMIL keep_one (a padded pass per tile);
    #: attention models take both in closed form, transformer_mil keep_one in one batch
    max_perturbation_tiles: int = 500
    #: lesion area fraction from which a tile counts as a lesion tile
    min_fraction: float = 0.5
    #: leave tiles with 0 < lesion fraction < min_fraction (lesion borders) out of the tile
    #: AUC/AP and the pointing games, counted in the tables; false: they count as negatives
    exclude_partial: bool = True
    #: k of the top-k pointing game
    pointing_k: int = 5
    #: steps of the patch-flipping curves (MoRF, LeRF, random order): each step removes
    #: 1/steps of the tiles (xMIL used 100 steps of 1 %); 0: no curves (the slowest scores)
    flip_steps: int = 20
    #: random tile orders averaged for the patch-flipping baseline
    flip_random: int = 3
    #: run the model-randomisation sanity check (Adebayo et al.)
    sanity: bool = True
    #: randomise the model layer by layer from the output (cascading, MPRT), one explanation
    #: per stage; false: only the fully randomised model
    sanity_cascade: bool = True
    #: |Spearman| between the trained and the fully randomised model's maps (or its mean over
    #: the cascade) from which a method is flagged as failing the sanity check
    sanity_threshold: float = 0.5
    #: bootstrap resamples (over slides) of the cohort table's confidence intervals
    bootstrap: int = 1000
    #: write each slide's comparison figure (thumbnail, then one heatmap per method)
    figure: bool = True
    #: Grad-CAM inside the k most attended tiles (CNN encoders, slide readable): gradcam.png;
    #: 0: none
    gradcam_topk: int = 4
    #: longest side in pixels of each panel of the comparison figure
    figure_side: int = 384
    #: seed of the random maps (combined with each slide's id), the random orders, the
    #: randomised model and the bootstrap
    seed: int = 0
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        renamed = [f"{old} is now {RENAMED[old]}" for old in self.methods if old in RENAMED]
        if renamed:
            raise ValueError(f"ExplainParams.methods: {'; '.join(renamed)} (the name says "
                             f"which of Chefer et al.'s rules it is)")
        unknown = sorted(set(self.methods) - set(METHOD_NAMES))
        if unknown:
            raise ValueError(f"ExplainParams.methods: unknown {unknown}; choose from "
                             f"{list(METHOD_NAMES)}")
        if self.ig_steps < 2 or self.flip_steps < 0 or self.flip_random < 1:
            raise ValueError("ExplainParams: ig_steps must be >= 2, flip_steps >= 0 and "
                             "flip_random >= 1")
        if (self.fold is not None and self.fold < 0) or self.fallback_fold < 0:
            raise ValueError("ExplainParams: fold and fallback_fold must be >= 0")
        if self.max_perturbation_tiles < 1 or self.max_quadratic_tiles < 1:
            raise ValueError("ExplainParams: max_perturbation_tiles and max_quadratic_tiles "
                             "must be >= 1")


@dataclass(frozen=True)
class LesionEvalParams:
    """Settings of the lesion-level evaluation."""

    #: FROC constants and detection settings (official Camelyon16 values by default).
    froc: FrocParams = field(default_factory=FrocParams)
    #: Which annotation groups are lesion / exclusion.
    annotations: AnnotationParams = field(default_factory=AnnotationParams)
    #: Class whose tile probability is the tumour map; None: the class that is not negative.
    positive_class: str | None = None
    #: Tile probability at or above which a tile is segmented as tumour.
    seg_threshold: float = 0.5
    #: Lesion area fraction at or above which a tile is truly tumour.
    min_fraction: float = 0.5
    #: Normalised attention at or above which a tile counts as marked (region report).
    attention_threshold: float = 0.5
    #: k of the top-k pointing game.
    pointing_k: int = 5
    #: Steps of the deletion / insertion curves, and random orders averaged as baseline.
    perturbation_steps: int = 20
    perturbation_random: int = 5
    #: At most this many tumour slides get perturbation curves (each costs
    #: 2 x steps x (1 + random) forward passes); None: all.
    perturbation_max_slides: int | None = None
    #: Seed of the random orders.
    seed: int = 0
    #: Slides left out of the lesion-level evaluation (e.g. Camelyon16 test_049, a duplicate).
    exclude: tuple[str, ...] = ()
