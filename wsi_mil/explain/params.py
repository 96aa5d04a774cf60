"""Settings of the explain stage (``wsi-mil explain``, the ``explain:`` YAML section).

Standard library only, so that building the command line and reading a config stay instant;
each field's ``#:`` comment is its documentation (``--help`` and the YAML reference).
"""

from __future__ import annotations

from dataclasses import dataclass

#: every explanation method, in the order of the tables (kept here so the CLI needs no torch).
METHOD_NAMES = ("attention", "rollout", "relevance", "gradient_x_input", "integrated_gradients",
                "attention_x_gradient", "segmentation", "random")


@dataclass(frozen=True)
class ExplainParams:
    """What ``wsi-mil explain`` computes for each slide and how it scores it."""

    #: methods to run (default: every method the run's model supports)
    methods: tuple[str, ...] = ()
    #: class explained; None: the class that is not the run's negative class (two classes),
    #: else the predicted class of each slide
    target: str | None = None
    #: fold whose model is explained (an explanation is of one model, not of the ensemble)
    fold: int = 0
    #: integration steps of integrated_gradients
    ig_steps: int = 32
    #: largest bag on which a transformer's n x n attention matrices are built (rollout,
    #: relevance, attention_x_gradient); larger bags fail with a clear error
    max_quadratic_tiles: int = 8000
    #: lesion area fraction from which a tile counts as a lesion tile
    min_fraction: float = 0.5
    #: k of the top-k pointing game
    pointing_k: int = 5
    #: steps of the deletion and insertion curves (0: skip them, the slowest scores)
    perturbation_steps: int = 20
    #: random tile orders averaged for the deletion/insertion baseline
    perturbation_random: int = 3
    #: run Adebayo et al.'s model-randomisation sanity check
    sanity: bool = True
    #: |Spearman| between the trained and randomised model's maps from which a method is flagged
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
        unknown = sorted(set(self.methods) - set(METHOD_NAMES))
        if unknown:
            raise ValueError(f"ExplainParams.methods: unknown {unknown}; choose from "
                             f"{list(METHOD_NAMES)}")
        if self.ig_steps < 2 or self.perturbation_steps < 0 or self.perturbation_random < 1:
            raise ValueError("ExplainParams: ig_steps must be >= 2, perturbation_steps >= 0 and "
                             "perturbation_random >= 1")
