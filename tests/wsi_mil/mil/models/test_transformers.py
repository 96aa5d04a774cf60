"""transmil and transformer_mil: registry, masks, bags of one tile, invariance where claimed,
the recorded attention path, and weights_only checkpoints."""

from __future__ import annotations

import pytest
import torch

from wsi_mil.mil.models import create_model, list_models

NAMES = ("transformer_mil", "transmil")


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, 24, 3, hidden_dims=(32,), dropout=0.0).eval()


def test_registered():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_output_contract(name, n):
    out = _model(name)(torch.randn(n, 24))
    assert out.logits.shape == (1, 3) and out.tile_logits.shape == (1, n, 3)
    assert out.attention.shape == (1, n) and torch.all(out.attention >= 0)
    assert out.attention.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_padded_batch_equals_single_bags(name):
    model = _model(name)
    a, b = torch.randn(30, 24), torch.randn(11, 24)
    x = torch.zeros(2, 30, 24)
    x[0], x[1, :11] = a, b
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0], mask[1, :11] = True, True
    out = model(x, mask)
    torch.testing.assert_close(out.logits[1], model(b).logits[0])
    torch.testing.assert_close(out.logits[0], model(a).logits[0])
    assert torch.all(out.attention[1, 11:] == 0)


def test_transformer_mil_is_permutation_invariant():
    model, x = _model("transformer_mil"), torch.randn(50, 24)
    perm = torch.randperm(50)
    out, shuffled = model(x), model(x[perm])
    torch.testing.assert_close(out.logits, shuffled.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.attention[0, perm], shuffled.attention[0], atol=1e-6, rtol=1e-4)


def test_transmil_depends_on_order_as_documented():
    model, x = _model("transmil"), torch.randn(50, 24)
    assert not torch.allclose(model(x).logits, model(x.flip(0)).logits, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_recorded_path_matches_fast_path(name):
    model, x = _model(name), torch.randn(37, 24)
    fast, recorded = model(x), model(x, record=True)
    torch.testing.assert_close(fast.logits, recorded.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.attention, recorded.attention, atol=1e-5, rtol=1e-4)
    assert len(model.records) == 2 and model.records[0].matrix.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_weights_only(name, tmp_path):
    model, x = _model(name), torch.randn(9, 24)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    config = model.config()
    rebuilt = create_model(config["model"], config["in_dim"], config["n_classes"],
                           **config["kwargs"])
    rebuilt.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    torch.testing.assert_close(rebuilt.eval()(x).logits, model(x).logits)


@pytest.mark.parametrize("name", NAMES)
def test_predict_chunked_equals_forward(name):
    model, x = _model(name), torch.randn(45, 24)
    chunked = model.predict_chunked(lambda s, e: x[s:e], 45, chunk_size=8)
    torch.testing.assert_close(chunked.logits, model(x).logits)
