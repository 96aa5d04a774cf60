"""Settings of the explain stage (``wsi-mil explain``, the ``explain:`` YAML section).

Standard library only, so that building the command line and reading a config stay instant;
each field's ``#:`` comment is its documentation (``--help`` and the YAML reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from features.params import device_field
from tiling.params import AnnotationParams
from wsi_mil.config.schema import check_fields, constrained
from wsi_mil.metrics.params import FrocParams, lesion_fraction_field
from wsi_mil.mil.params import (
    attended_tile_threshold_field,
    positive_class_field,
    positive_tile_threshold_field,
)

#: every explanation method, in the order of the tables (kept here so the CLI needs no torch).
METHOD_NAMES = (
    "attention",
    "rollout",
    "chefer_iccv2021",
    "chefer_cvpr2021",
    "lrp",
    "gradient_x_input",
    "integrated_gradients",
    "attention_x_gradient",
    "perturbation",
    "keep_one",
    "segmentation",
    "random",
)
#: names an earlier release used, and what they are called now.
RENAMED = {"relevance": "chefer_iccv2021"}


@dataclass(frozen=True)
class ExplainParams:
    """What ``wsi-mil explain`` computes for each slide and how it scores it."""

    #: methods to run (default: every method the run's model supports)
    methods: tuple[str, ...] = constrained((), choices=METHOD_NAMES)
    #: class explained; None: the class that is not the run's negative class (two classes),
    #: else the predicted class of each slide
    target: str | None = None
    #: fold whose model explains every slide; None: out of fold, each slide by the fold model
    #: that held it out (as wsi-mil predict chooses), slides no fold held out by fallback_fold
    fold: int | None = constrained(None, ge=0)
    #: fold that explains, out of fold, the slides no fold held out (or that every fold held
    #: out, as an external test set); slides it trained on are in sample
    fallback_fold: int = constrained(0, ge=0)
    #: integration steps of integrated_gradients
    ig_steps: int = constrained(32, ge=2)
    #: largest bag on which a transformer's n x n attention matrices are built (rollout,
    #: chefer_iccv2021, chefer_cvpr2021, attention_x_gradient); larger bags fail with a clear
    #: error
    max_quadratic_tiles: int = constrained(8000, ge=1)
    #: largest bag on which a transformer runs perturbation (a forward pass per tile left out,
    #: cubic in the bag for exact attention) and TransMIL keep_one (a padded pass per tile);
    #: attention models take both in closed form, transformer_mil keep_one in one batch
    max_perturbation_tiles: int = constrained(500, ge=1)
    min_fraction: float = lesion_fraction_field()
    #: leave tiles with 0 < lesion fraction < min_fraction (lesion borders) out of the tile
    #: AUC/AP and the pointing games, counted in the tables; false: they count as negatives
    exclude_partial: bool = True
    #: k of the top-k pointing game
    pointing_k: int = constrained(5, ge=1)
    #: steps of the patch-flipping curves (MoRF, LeRF, random order): each step removes
    #: 1/steps of the tiles (xMIL used 100 steps of 1 %); 0: no curves (the slowest scores)
    flip_steps: int = constrained(20, ge=0)
    #: random tile orders averaged for the patch-flipping baseline
    flip_random: int = constrained(3, ge=1)
    #: run the model-randomisation sanity check (Adebayo et al.)
    sanity: bool = True
    #: randomise the model layer by layer from the output (cascading, MPRT), one explanation
    #: per stage; false: only the fully randomised model
    sanity_cascade: bool = True
    #: |Spearman| between the trained and the fully randomised model's maps (or its mean over
    #: the cascade) from which a method is flagged as failing the sanity check
    sanity_threshold: float = constrained(0.5, ge=0, le=1)
    #: bootstrap resamples (over slides) of the cohort table's confidence intervals
    bootstrap: int = constrained(1000, ge=0)
    #: write each slide's comparison figure (thumbnail, then one heatmap per method)
    figure: bool = True
    #: Grad-CAM inside the k most attended tiles (CNN encoders, slide readable): gradcam.png;
    #: 0: none
    gradcam_topk: int = constrained(4, ge=0)
    #: longest side in pixels of each panel of the comparison figure
    figure_side: int = constrained(384, ge=1)
    #: seed of the random maps (combined with each slide's id), the random orders, the
    #: randomised model and the bootstrap
    seed: int = 0
    device: str = device_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        renamed = [f"{old} is now {RENAMED[old]}" for old in self.methods if old in RENAMED]
        if renamed:
            raise ValueError(
                f"ExplainParams.methods: {'; '.join(renamed)} (the name says "
                f"which of Chefer et al.'s rules it is)"
            )
        check_fields(self)  # every range above, and the methods' names


@dataclass(frozen=True)
class LesionEvalParams:
    """Settings of the lesion-level evaluation."""

    #: FROC constants and detection settings (official Camelyon16 values by default).
    froc: FrocParams = field(default_factory=FrocParams)
    #: Which annotation groups are lesion / exclusion.
    annotations: AnnotationParams = field(default_factory=AnnotationParams)
    positive_class: str | None = positive_class_field()
    seg_threshold: float = positive_tile_threshold_field()
    min_fraction: float = lesion_fraction_field()
    attention_threshold: float = attended_tile_threshold_field()
    #: k of the top-k pointing game.
    pointing_k: int = constrained(5, ge=1)
    #: Steps of the deletion / insertion curves, and random orders averaged as baseline.
    perturbation_steps: int = constrained(20, ge=1)
    perturbation_random: int = constrained(5, ge=1)
    #: At most this many tumour slides get perturbation curves (each costs
    #: 2 x steps x (1 + random) forward passes); None: all.
    perturbation_max_slides: int | None = constrained(None, ge=0)
    #: Seed of the random orders.
    seed: int = 0
    #: Slides left out of the lesion-level evaluation (e.g. Camelyon16 test_049, a duplicate).
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_fields(self)
