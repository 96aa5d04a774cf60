"""The tasks' losses against hand-computed values, and what a task decodes and fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsi_mil.mil.labels import read_labels
from wsi_mil.mil.models import create_model, list_models
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.tasks import (
    RiskModel,
    cox_loss,
    discrete_nll,
    discrete_risk,
    fit_baseline,
    fit_task,
    make_task,
)
from wsi_mil.mil.train import model_kwargs


def test_cox_loss_with_tied_event_times_matches_the_hand_computed_breslow_value():
    # times 1, 2, 2 (a tie), 3 censored; Breslow: the tied events share the risk set {1, 2, 3}
    risk = torch.tensor([0.5, -0.2, 0.1, 0.3])
    time = torch.tensor([1.0, 2.0, 2.0, 3.0])
    event = torch.tensor([1.0, 1.0, 1.0, 0.0])
    everyone = math.log(math.exp(0.5) + math.exp(-0.2) + math.exp(0.1) + math.exp(0.3))
    after_one = math.log(math.exp(-0.2) + math.exp(0.1) + math.exp(0.3))
    expected = -((0.5 - everyone) + (-0.2 - after_one) + (0.1 - after_one)) / 3
    assert float(cox_loss(risk, time, event)) == pytest.approx(expected, rel=1e-6)
    # a constant added to every risk changes nothing; a batch without an event says nothing
    assert float(cox_loss(risk + 7.0, time, event)) == pytest.approx(expected, rel=1e-5)
    none = cox_loss(risk.requires_grad_(), time, torch.zeros(4))
    assert float(none.detach()) == 0.0
    none.backward()
    assert torch.equal(risk.grad, torch.zeros(4))


def test_cox_loss_gradient_raises_the_risk_of_early_events():
    risk = torch.zeros(3, requires_grad=True)
    cox_loss(risk, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0])).backward()
    assert risk.grad[0] < 0 < risk.grad[2]  # descent raises the first, lowers the censored


def test_discrete_nll_matches_the_hand_computed_value():
    logits = torch.tensor([[0.0, 1.0, -1.0], [0.5, 0.0, 0.0]])

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    # slide 0: event in interval 1 (survived interval 0, then the event)
    event_in_1 = -math.log(1 - sig(0.0)) - math.log(sig(1.0))
    # slide 1: censored in interval 1 (survived intervals 0 and 1)
    censored_in_1 = -math.log(1 - sig(0.5)) - math.log(1 - sig(0.0))
    value = discrete_nll(logits, torch.tensor([1, 1]), torch.tensor([1.0, 0.0]))
    assert float(value) == pytest.approx((event_in_1 + censored_in_1) / 2, rel=1e-6)
    risk = discrete_risk(logits.numpy())
    s = [
        1 - sig(0.0),
        (1 - sig(0.0)) * (1 - sig(1.0)),
        (1 - sig(0.0)) * (1 - sig(1.0)) * (1 - sig(-1.0)),
    ]
    assert risk[0] == pytest.approx(-sum(s))
    assert float(RiskModel.risk(logits)[0, 0]) == pytest.approx(-sum(s), rel=1e-6)


def labels_of(tmp_path, text, task, targets=()):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return read_labels(path, task=task, targets=targets)


def test_discrete_intervals_come_from_the_training_event_times(tmp_path):
    table = labels_of(
        tmp_path, "slide_id,time,event\na,1,1\nb,2,1\nc,3,0\nd,4,1\ne,9,1\n", "survival"
    )
    task = make_task(TrainParams(task="survival", survival_loss="nll", survival_bins=2), table)
    fitted = fit_task(task, table.values(["a", "b", "c", "d"]))  # e is a test slide
    edges = fitted.fitted["bin_edges"]
    assert edges[0] == 0 and edges[-1] == float("inf")
    assert edges[1] == pytest.approx(np.median([1, 2, 4]))  # events of the training slides
    # survival: 1 until the first interval ends (at the edge 2), then the product of the
    # (1 - hazard) of the intervals passed; the last interval never ends
    logits = np.array([[0.0, 0.0]])
    curve = fitted.survival(logits, [1.0, 2.0, 3.0, 100.0])
    assert curve[0] == pytest.approx([1.0, 0.5, 0.5, 0.5])


def test_cox_task_centres_risks_and_fits_breslow_on_the_training_slides(tmp_path):
    table = labels_of(tmp_path, "slide_id,time,event\na,1,1\nb,2,1\nc,3,0\nd,4,1\n", "survival")
    task = make_task(TrainParams(task="survival"), table)
    raw = np.array([[2.0], [1.5], [1.0], [0.5]])
    fitted = fit_baseline(
        fit_task(task, table.values(list("abcd"))), raw, table.values(list("abcd"))
    )
    assert fitted.decode(raw)[:, 0].mean() == pytest.approx(0.0)
    from sksurv.linear_model.coxph import BreslowEstimator

    reference = BreslowEstimator().fit(
        raw[:, 0] - raw.mean(), np.array([1, 1, 0, 1], bool), np.array([1.0, 2.0, 3.0, 4.0])
    )
    curve = fitted.survival(raw[:1], [1.0, 2.5, 4.0])[0]
    s0 = np.interp([1.0, 2.0, 4.0], reference.baseline_survival_.x, reference.baseline_survival_.y)
    expected = s0 ** math.exp(raw[0, 0] - raw.mean())
    assert curve == pytest.approx(expected)


def test_regression_target_is_standardised_with_the_training_slides(tmp_path):
    table = labels_of(tmp_path, "slide_id,score\na,1\nb,3\nc,5\nd,100\n", "regression", ("score",))
    task = fit_task(
        make_task(TrainParams(task="regression", targets=("score",)), table),
        table.values(["a", "b", "c"]),
    )
    assert task.fitted["target_mean"] == pytest.approx(3.0)
    assert task.fitted["target_std"] == pytest.approx(np.std([1, 3, 5]))
    assert task.decode(np.array([[1.0]]))[0, 0] == pytest.approx(3.0 + np.std([1, 3, 5]))
    assert task.output_names == ("score",)


@pytest.mark.parametrize("task", ["classification", "multilabel", "survival", "regression"])
@pytest.mark.parametrize("model", list_models())
def test_every_model_supports_every_task(tmp_path, model, task, device):
    """One output head for all: each registered model gives the task's outputs and per-tile
    scores, and its loss back-propagates (multilabel: a branch per target where the model can
    have one)."""
    texts = {
        "classification": "slide_id,label\na,x\nb,y\nc,x\nd,y\n",
        "multilabel": "slide_id,t1,t2,t3\na,1,0,1\nb,0,1,0\nc,1,1,0\nd,0,0,1\n",
        "survival": "slide_id,time,event\na,1,1\nb,2,0\nc,3,1\nd,4,1\n",
        "regression": "slide_id,target\na,1\nb,2\nc,3\nd,4.5\n",
    }
    table = labels_of(tmp_path, texts[task], task)
    params = TrainParams(model=model, task=task, hidden_dims=(16,), attention_dim=8)
    negative = 0 if task == "classification" else None
    spec = fit_task(make_task(params, table, negative), table.values(list("abcd")))
    torch.manual_seed(0)
    net = create_model(model, 6, spec.n_outputs, **model_kwargs(params, spec)).to(device)
    x = torch.randn(4, 9, 6, device=device)
    out = net(x, coords=torch.rand(4, 9, 2, device=device) if net.uses_coords else None)
    assert out.logits.shape == (4, spec.n_outputs)
    assert out.tile_logits.shape == (4, 9, spec.n_outputs)
    if task == "multilabel":
        assert out.branch_attention.shape[-1] == (
            3 if net.supports_branches or net.one_branch_per_class else 1
        )
    assert (net.tile_head is None) == (task in ("survival", "regression"))
    targets = torch.tensor(table.values(list("abcd")), dtype=torch.float32, device=device)
    loss = spec.slide_loss(out.logits, torch.tensor([0, 1, 0, 1], device=device), targets, None)
    loss.backward()
    assert torch.isfinite(loss)
    assert spec.decode(out.logits.detach().cpu().numpy()).shape == (4, len(spec.output_names))
