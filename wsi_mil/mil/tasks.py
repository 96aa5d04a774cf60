"""What a run learns: one class per slide, several 0/1 targets, a time to an event, or a number.

A :class:`Task` is everything that differs between the four (``TrainParams.task``): how many
outputs the model has (:mod:`wsi_mil.mil.models.base`: one output head for all), the slide loss,
what the outputs mean (class probabilities, target probabilities, a risk, a value: what
``predictions.csv`` and the predictions file carry), how the segmentation head is taught, and
what is fitted on a fold's training slides besides the network (time intervals, the target's
scale, the Cox baseline). A run records its task in every ``model.json``
(:meth:`Task.meta`), and :func:`task_from_meta` rebuilds it for prediction, heatmaps, explanations
and evaluation.

* ``classification``: softmax over the classes, class-weighted cross-entropy
  (:func:`slide_loss`); the segmentation head learns "lesion vs lesion-free"
  from the negative class, or, for subtypes (no negative class), each class against the others
  (:mod:`wsi_mil.mil.models.segmentation`), pseudo-labelled from that class's own attention
  branch (attention models get one per class: :func:`wsi_mil.mil.train.model_kwargs`).
* ``multilabel``: one sigmoid per target, binary cross-entropy with each target's positives and
  negatives weighted by inverse frequency (a fixed normaliser, as the classification loss); the
  head is one-vs-rest per target; attention models get one attention branch per target.
* ``survival``: ``cox``, the Cox partial likelihood (Breslow's ties) over mini-batches of bags
  (:func:`cox_loss`), the output a log relative hazard (the risk), centred on the mean risk of
  the fold's training slides (the partial likelihood does not see a constant added to every
  risk, so each fold's risks have their own offset; centred, the folds' risks can be pooled and
  averaged); the baseline survival is Breslow's estimator on the fold's training slides
  (scikit-survival's ``BreslowEstimator``). Or
  ``nll``, the discrete-time negative log-likelihood of Zadeh & Schmid 2020 (as PORPOISE and
  nnMIL: :func:`discrete_nll`) over ``survival_bins`` intervals cut at quantiles of the fold's
  training event times; the risk is minus the sum of the survival over the intervals (PORPOISE's).
  No segmentation head (no tile classes): tiles are scored by the output head on each tile alone.
* ``regression``: the target standardised with the fold's training mean and standard deviation,
  MSE or Huber loss; no segmentation head, as for survival.

Hand-written losses, and why: the Cox partial likelihood is in ``torchsurv``
(``neg_partial_log_likelihood``), which needs torch >= 2.8 (this package supports 2.2), pydantic
and torchmetrics; the discrete-time NLL is in ``pycox`` (``nll_logistic_hazard``), which pins old
pandas and needs numba. Both are a few lines, tested against hand-computed values (with ties).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F

from wsi_mil.extras import require_extra
from wsi_mil.mil.labels import LabelTable
from wsi_mil.mil.params import TrainParams

#: a model type, kept by the functions that return a view of the model they are given
ModelT = TypeVar("ModelT", bound=torch.nn.Module)

#: percentiles of the labelled event times at which survival curves are reported and scored
SURVIVAL_PERCENTILES = tuple(range(10, 91, 10))


def class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C_present * n_c)``: each class present contributes the
    same total weight, and the weight per bag averages 1 over the training bags."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = max(int((counts > 0).sum()), 1)
    weights = np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def slide_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy of each bag times its class's weight, summed and divided by the number of
    bags (a fixed normaliser).

    Not ``F.cross_entropy(..., weight=w)``: that is a *weighted mean*, divided by the sum of the
    batch's weights, so for one bag per step (the default) the weight cancels and the loss and
    its gradient are exactly the unweighted ones. Dividing by the bag count keeps the weights'
    effect at any batch size, and the loss scale (the weights average 1 over training bags).
    """
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    if weights is not None:
        losses = losses * weights[labels]
    return losses.mean()


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood with Breslow's ties, divided by the number of events.

    ``risk`` ``[n]`` log relative hazards, ``time`` ``[n]``, ``event`` ``[n]`` (1 observed).
    For each event ``i``: ``risk_i - log sum_{j: t_j >= t_i} exp(risk_j)``, the risk set being
    the bags of the same mini-batch still event-free at ``t_i`` (tied times in each other's risk
    set: Breslow). 0 (with a gradient) when the batch holds no event: it says nothing.
    """
    risk, time, event = (
        risk.float().reshape(-1),
        time.float().reshape(-1),
        event.float().reshape(-1),
    )
    at_risk = time.unsqueeze(0) >= time.unsqueeze(1)  # [i, j]: j is in i's risk set
    log_denominator = torch.logsumexp(risk.unsqueeze(0).masked_fill(~at_risk, float("-inf")), dim=1)
    n_events = event.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    return -((risk - log_denominator) * event).sum() / n_events


def discrete_nll(logits: torch.Tensor, interval: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """The discrete-time survival negative log-likelihood (Zadeh & Schmid 2020), mean over bags.

    ``logits`` ``[n, J]``: the hazard logits of the J intervals (hazard ``h_j = sigmoid``, the
    probability of the event in interval j given survival to it); ``interval`` ``[n]`` the
    interval of each bag's time; ``event`` ``[n]``. An event in interval ``k`` contributes
    ``-log S_{k-1} - log h_k`` (survived the intervals before, then the event); a censoring in
    ``k`` contributes ``-log S_k`` (survived it), with ``S_k = prod_{j <= k} (1 - h_j)`` and
    ``S_{-1} = 1``. PORPOISE's ``nll_loss`` with ``alpha = 0``.
    """
    logits = logits.float()
    k = interval.long().reshape(-1, 1)
    event = event.float().reshape(-1)
    log_h = F.logsigmoid(logits)
    log_1mh = F.logsigmoid(-logits)
    log_s = torch.cumsum(log_1mh, dim=1)  # log S_j
    log_s_before = torch.cat([torch.zeros_like(log_s[:, :1]), log_s[:, :-1]], dim=1)
    uncensored = -(log_s_before.gather(1, k) + log_h.gather(1, k))[:, 0]
    censored = -log_s.gather(1, k)[:, 0]
    return (event * uncensored + (1 - event) * censored).mean()


def discrete_risk(logits: np.ndarray) -> np.ndarray:
    """Risk of discrete-time hazard logits ``[..., J]``: minus the sum of the survival
    probabilities over the intervals (PORPOISE's), so a higher risk means an earlier event."""
    survival = np.cumprod(1.0 / (1.0 + np.exp(np.asarray(logits, np.float64))), axis=-1)
    return -survival.sum(axis=-1)


@dataclass
class Task:
    """A task's fixed choices and what a fold fitted (see the module docstring)."""

    kind: str
    output_names: tuple[str, ...]  # the per-slide outputs' names (class_names in the files)
    n_outputs: int  # the model's outputs
    #: "negative" (lesion vs lesion-free), "one_vs_rest" (subtypes, targets) or None (no head)
    segmentation: str | None
    negative_index: int | None = None
    fitted: dict[str, Any] = field(default_factory=dict)  # per fold: bins, scale, baseline
    params: dict[str, Any] = field(default_factory=dict)  # loss choices

    # -- the loss ---------------------------------------------------------------------------
    @property
    def groups_bags(self) -> bool:
        """Whether the loss needs several bags at once (Cox: a risk set)."""
        return self.kind == "survival" and self.params["survival_loss"] == "cox"

    def weights(self, targets: np.ndarray, labels: Sequence[int]) -> torch.Tensor | None:
        """Per-class (classification) or per-target positive/negative (multilabel) weights of
        the training bags, inverse to their frequency (each averaging 1); None otherwise."""
        if self.kind == "classification":
            return class_weights(list(labels), self.n_outputs)
        if self.kind == "multilabel":
            targets = np.asarray(targets, dtype=np.float64).reshape(-1, self.n_outputs)
            n = len(targets)
            pos = targets.sum(axis=0)
            w_pos = np.where(pos > 0, n / (2 * np.maximum(pos, 1)), 0.0)
            w_neg = np.where(n - pos > 0, n / (2 * np.maximum(n - pos, 1)), 0.0)
            return torch.tensor(np.stack([w_neg, w_pos]), dtype=torch.float32)
        return None

    def slide_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """The task's slide loss of a batch (of a Cox mini-batch: its risk set)."""
        if self.kind == "classification":
            return slide_loss(logits, labels, weights)
        logits = logits.float()
        if self.kind == "multilabel":
            losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            if weights is not None:
                losses = losses * torch.where(targets > 0.5, weights[1], weights[0])
            return losses.mean()
        if self.kind == "survival":
            time, event = targets[:, 0], targets[:, 1]
            if self.params["survival_loss"] == "cox":
                return cox_loss(logits[:, 0], time, event)
            edges = torch.as_tensor(
                self.fitted["bin_edges"][1:-1], dtype=time.dtype, device=time.device
            )
            return discrete_nll(logits, torch.bucketize(time, edges, right=True), event)
        scaled = (targets[:, 0] - self.fitted["target_mean"]) / self.fitted["target_std"]
        if self.params["regression_loss"] == "huber":
            return F.huber_loss(logits[:, 0], scaled, delta=self.params["huber_delta"])
        return F.mse_loss(logits[:, 0], scaled)

    # -- what the outputs mean ----------------------------------------------------------------
    def decode(self, logits: np.ndarray) -> np.ndarray:
        """Per-slide outputs ``[n, len(output_names)]`` of raw outputs ``[n, n_outputs]``:
        class probabilities, target probabilities, the risk, the value."""
        logits = np.asarray(logits, dtype=np.float64).reshape(-1, self.n_outputs)
        if self.kind == "classification":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        if self.kind == "multilabel":
            return 1.0 / (1.0 + np.exp(-logits))
        if self.kind == "survival":
            if self.params["survival_loss"] == "cox":
                return logits[:, :1] - self.fitted.get("risk_offset", 0.0)
            return discrete_risk(logits)[:, None]
        return logits[:, :1] * self.fitted["target_std"] + self.fitted["target_mean"]

    def decode_tiles(self, tile_logits: np.ndarray) -> np.ndarray:
        """Per-tile scores ``[N, len(output_names)]``: the segmentation head's probabilities
        (softmax against the negative class, or one sigmoid per class or target), or, without a
        head, the output of a bag made of the tile alone (its risk, its value)."""
        tile_logits = np.asarray(tile_logits, dtype=np.float64)
        if self.segmentation == "one_vs_rest":
            return 1.0 / (1.0 + np.exp(-tile_logits))
        return self.decode(tile_logits)

    def survival(self, logits: np.ndarray, times: npt.ArrayLike) -> np.ndarray:
        """Survival probabilities ``[n, len(times)]`` of raw outputs: the fold's Breslow
        baseline to the power exp(risk) (Cox), or the product of the intervals' (1 - hazard)
        up to each time (discrete)."""
        logits = np.asarray(logits, dtype=np.float64).reshape(-1, self.n_outputs)
        times = np.asarray(times, dtype=np.float64)
        if self.params["survival_loss"] == "cox":
            base_t = np.asarray(self.fitted["baseline_times"], dtype=np.float64)
            base_s = np.asarray(self.fitted["baseline_survival"], dtype=np.float64)
            index = np.searchsorted(base_t, times, side="right") - 1
            s0 = np.where(index >= 0, base_s[np.clip(index, 0, None)], 1.0)
            return s0[None, :] ** np.exp(self.decode(logits))
        edges = np.asarray(self.fitted["bin_edges"], dtype=np.float64)
        survival = np.cumprod(1.0 / (1.0 + np.exp(logits)), axis=1)  # S after each interval
        passed = np.searchsorted(edges[1:], times, side="right")  # intervals fully survived
        padded = np.concatenate([np.ones((len(survival), 1)), survival], axis=1)
        return padded[:, np.clip(passed, 0, survival.shape[1])]

    def predicted_labels(self, outputs: np.ndarray, thresholds: Any) -> list[str]:
        """Each slide's predicted label from its outputs and the decision rule's numbers: the
        class (at the binary threshold), the targets at or above their thresholds (``a;b``,
        ``none``), the risk group at the fold's cut, the value."""
        from wsi_mil.metrics.slide import predict_indices

        outputs = np.asarray(outputs, dtype=np.float64).reshape(-1, len(self.output_names))
        if self.kind == "classification":
            negative = 0 if self.negative_index is None else self.negative_index
            chosen = predict_indices(outputs, thresholds, negative)
            return [self.output_names[int(k)] for k in chosen]
        if self.kind == "multilabel":
            cuts = np.asarray(thresholds, dtype=np.float64).reshape(-1, len(self.output_names))
            return [
                ";".join(n for n, p, t in zip(self.output_names, row, cut) if p >= t) or "none"
                for row, cut in zip(outputs, np.broadcast_to(cuts, outputs.shape))
            ]
        if self.kind == "survival":
            cuts = np.broadcast_to(
                np.asarray(thresholds, dtype=np.float64).reshape(-1), (len(outputs),)
            )
            return ["high risk" if r >= c else "low risk" for r, c in zip(outputs[:, 0], cuts)]
        return [f"{v:.4g}" for v in outputs[:, 0]]

    # -- records ------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """What ``model.json`` records about the task (:func:`task_from_meta` reads it)."""
        return {
            "task": self.kind,
            "class_names": list(self.output_names),
            "negative_class": (
                None if self.negative_index is None else self.output_names[self.negative_index]
            ),
            "segmentation": self.segmentation,
            "task_params": dict(self.params),
            **{k: _plain(v) for k, v in self.fitted.items()},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


#: fitted values a model.json may hold (per fold)
FITTED_KEYS = (
    "bin_edges",
    "target_mean",
    "target_std",
    "baseline_times",
    "baseline_survival",
    "survival_times",
    "risk_offset",
)


def make_task(params: TrainParams, labels: LabelTable, negative_index: int | None = None) -> Task:
    """The task of a training run, before any fold is fitted."""
    kind = params.task
    choices: dict[str, Any] = {}
    if kind == "classification":
        names = tuple(labels.class_names)
        return Task(
            kind,
            names,
            len(names),
            "negative" if negative_index is not None else "one_vs_rest",
            negative_index,
        )
    if kind == "multilabel":
        names = tuple(labels.target_names)
        return Task(kind, names, len(names), "one_vs_rest")
    if kind == "survival":  # its metrics (and Cox's baseline) need the extra: say so first
        require_extra("survival", "a survival task")
        choices["survival_loss"] = params.survival_loss
        n = 1 if params.survival_loss == "cox" else params.survival_bins
        times = labels.values([r.slide_id for r in labels.rows])
        events = times[:, 0][times[:, 1] > 0]
        grid = np.unique(np.percentile(events, SURVIVAL_PERCENTILES))
        return Task(
            kind, ("risk",), n, None, fitted={"survival_times": grid.tolist()}, params=choices
        )
    choices.update(regression_loss=params.regression_loss, huber_delta=params.huber_delta)
    return Task(kind, tuple(labels.target_names), 1, None, params=choices)


def fit_task(task: Task, targets: np.ndarray) -> Task:
    """A copy of ``task`` with what is fitted on a fold's training targets ``[n, T]``: the
    discrete-time intervals (cut at quantiles of the training event times, PORPOISE's rule),
    or the regression target's mean and standard deviation."""
    fitted = dict(task.fitted)
    targets = np.asarray(targets, dtype=np.float64)
    if task.kind == "survival" and task.params["survival_loss"] == "nll":
        events = targets[targets[:, 1] > 0, 0]
        inner = np.quantile(events, np.linspace(0, 1, task.n_outputs + 1)[1:-1])
        fitted["bin_edges"] = [0.0, *np.maximum.accumulate(inner).tolist(), float("inf")]
    if task.kind == "regression":
        std = float(targets[:, 0].std())
        fitted.update(target_mean=float(targets[:, 0].mean()), target_std=std if std > 0 else 1.0)
    return Task(
        task.kind,
        task.output_names,
        task.n_outputs,
        task.segmentation,
        task.negative_index,
        fitted,
        dict(task.params),
    )


def fit_baseline(task: Task, logits: np.ndarray, targets: np.ndarray) -> Task:
    """A Cox task with its risk offset (the mean raw risk of the fold's training slides) and
    baseline survival: Breslow's estimator (scikit-survival) on the training slides' centred
    risks, times and events; other tasks unchanged."""
    if not (task.kind == "survival" and task.params["survival_loss"] == "cox"):
        return task
    require_extra("survival", "a Cox survival model")
    from sksurv.linear_model.coxph import BreslowEstimator

    targets = np.asarray(targets, dtype=np.float64)
    raw = np.asarray(logits, np.float64).reshape(-1)
    offset = float(raw.mean())
    breslow = BreslowEstimator().fit(raw - offset, targets[:, 1] > 0, targets[:, 0])
    fitted = dict(
        task.fitted,
        risk_offset=offset,
        baseline_times=breslow.baseline_survival_.x.tolist(),
        baseline_survival=breslow.baseline_survival_.y.tolist(),
    )
    return Task(
        task.kind,
        task.output_names,
        task.n_outputs,
        task.segmentation,
        task.negative_index,
        fitted,
        dict(task.params),
    )


def task_from_meta(meta: dict[str, Any]) -> Task:
    """The task a fold's ``model.json`` records (a run from before tasks: classification)."""
    kind = meta.get("task", "classification")
    names = tuple(meta["class_names"])
    negative = meta.get("negative_class")
    negative_index = names.index(negative) if negative in names else None
    segmentation = meta.get("segmentation", "negative" if kind == "classification" else None)
    fitted = {k: meta[k] for k in FITTED_KEYS if k in meta}
    return Task(
        kind,
        names,
        int(meta["n_classes"]),
        segmentation,
        negative_index,
        fitted,
        dict(meta.get("task_params") or {}),
    )


class RiskModel:
    """A discrete-time survival model seen through its risk, the quantity its explanations
    explain (gradients need one number): its output head gives the risk of its hazard logits
    (:func:`discrete_risk`, differentiable), so the slide output and each tile's are risks.
    Every other task's explained quantity is one of the model's own outputs (a class or target
    logit, the Cox risk, the standardised value), so only this one needs it.

    A mixin, not a wrapper: :func:`risk_view` makes a copy of the model (sharing its weights)
    whose class derives from this and the model's own, so every explanation method that looks
    inside the model (the closed-form perturbations, LRP's rules, a transformer's recorded
    attention, the randomisation cascade's layers) sees the same network."""

    @staticmethod
    def risk(logits: torch.Tensor) -> torch.Tensor:
        return -torch.cumprod(torch.sigmoid(-logits.float()), dim=-1).sum(-1, keepdim=True)

    def head_outputs(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.risk(super().head_outputs(pooled))  # type: ignore[misc]


def risk_view(model: ModelT) -> ModelT:
    """``model`` (same weights) with one output, the risk of its hazard logits (
    :class:`RiskModel`); its tile scores (no segmentation head) are each tile's risk."""
    import copy

    view = copy.copy(model)  # a new object over the same parameters and modules
    view.__class__ = type(f"Risk{type(model).__name__}", (RiskModel, type(model)), {})
    # nn.Module's __setattr__ is typed for tensors and modules; n_classes is a plain int
    view.n_classes = 1  # type: ignore[assignment]
    return view


def explained_model(model: ModelT, task: Task) -> ModelT:
    """The model whose output ``target`` an explanation explains for ``task``."""
    if task.kind == "survival" and task.params.get("survival_loss") == "nll":
        return risk_view(model)
    return model


def explained_output(task: Task) -> Callable[[torch.Tensor], torch.Tensor]:
    """How the re-scoring of a bag (patch flipping) reads the explained model's outputs
    ``[B, C]``: class probabilities (softmax), target probabilities (sigmoid), or as they are
    (the risk, the standardised value)."""
    if task.kind == "classification":
        return lambda logits: logits.float().softmax(-1)
    if task.kind == "multilabel":
        return lambda logits: torch.sigmoid(logits.float())
    return lambda logits: logits.float()
