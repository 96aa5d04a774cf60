"""LRP with the xMIL rules: conservation on every model, the rules leave the forward pass alone,
and the attention gate is what separates LRP from gradient x input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_mil.explain.lrp import lrp_relevance
from wsi_mil.explain.methods import explain
from wsi_mil.mil.models import create_model, list_models


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(3)
    return create_model(name, 16, 2, hidden_dims=(32,), dropout=0.0, **kwargs).eval()


def _zero_biases(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None and isinstance(module.bias, torch.Tensor):
                module.bias.zero_()
        if hasattr(model, "cls_token"):
            model.cls_token.zero_()


@pytest.mark.parametrize("name", list_models())
def test_relevance_sums_to_the_logit_without_biases(name):
    """Without biases (and a zero class token) the modified pass is positively homogeneous:
    the tiles' relevances sum to the logit (Euler), for every model and either class."""
    model, x = _model(name), torch.randn(23, 16)
    _zero_biases(model)
    for target in (0, 1):
        relevance = lrp_relevance(model, x, None, target)
        with torch.no_grad():
            logit = float(model(x).logits[0, target])
        assert relevance.logit == pytest.approx(logit, abs=1e-5)
        assert relevance.tiles.sum() == pytest.approx(logit, rel=1e-4, abs=1e-5)
        assert abs(relevance.bias_share) < 1e-4 * max(1.0, abs(logit))


@pytest.mark.parametrize("name", ["gated_abmil", "transformer_mil", "transmil"])
def test_with_biases_the_share_they_absorb_is_reported(name):
    model, x = _model(name), torch.randn(17, 16)
    relevance = lrp_relevance(model, x, None, 1)
    with torch.no_grad():
        assert relevance.logit == pytest.approx(float(model(x).logits[0, 1]), abs=1e-5)
    assert relevance.tiles.sum() + relevance.bias_share == pytest.approx(relevance.logit)
    np.testing.assert_allclose(explain(model, x, "lrp", target=1), relevance.tiles, rtol=1e-6)


def test_attention_pooling_relevance_is_the_gated_value_path():
    """With attention a gate, a tile's relevance is a_i * (w_c . h_i) over its embedding's
    ReLU path: for a one-layer embedding without bias, exactly ``a_i * w_c . h_i``."""
    model, x = _model("gated_abmil"), torch.randn(9, 16)
    with torch.no_grad():
        model.embed[0].bias.zero_()
        out = model(x)
        h = model.embed(x)
        expected = out.attention[0] * (h @ model.classifier.weight[1])
    np.testing.assert_allclose(
        lrp_relevance(model, x, None, 1).tiles, expected.double().numpy(), rtol=1e-4, atol=1e-6
    )


def test_lrp_rules_change_only_the_backward_pass():
    model, x = _model("transformer_mil"), torch.randn(12, 16, requires_grad=True)
    plain = model(x).logits[0, 1]
    (plain_grad,) = torch.autograd.grad(plain, x)
    with model.lrp_rules():
        ruled = model(x).logits[0, 1]
        (ruled_grad,) = torch.autograd.grad(ruled, x)
    assert ruled.item() == pytest.approx(plain.item(), abs=1e-5)
    assert not torch.allclose(plain_grad, ruled_grad)
    assert not any(getattr(m, "lrp_rule", False) for m in model.modules())  # restored
