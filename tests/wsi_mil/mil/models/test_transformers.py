"""transmil and transformer_mil: registry, masks, bags of one tile, invariance where claimed,
the recorded attention path, and weights_only checkpoints, on the test device
(``WSI_MIL_TEST_DEVICE``)."""

from __future__ import annotations

import pytest
import torch

from wsi_mil.mil.models import create_model, list_models

NAMES = ("transformer_mil", "transmil")


def _model(name: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, 24, 3, hidden_dims=(32,), dropout=0.0).to(device).eval()


def test_registered():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_output_contract(name, n, device):
    out = _model(name, device)(torch.randn(n, 24, device=device))
    assert out.logits.shape == (1, 3) and out.tile_logits.shape == (1, n, 3)
    assert out.attention.shape == (1, n) and torch.all(out.attention >= 0)
    assert out.attention.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_padded_batch_equals_single_bags(name, device):
    model = _model(name, device)
    a, b = torch.randn(30, 24, device=device), torch.randn(11, 24, device=device)
    x = torch.zeros(2, 30, 24, device=device)
    x[0], x[1, :11] = a, b
    mask = torch.zeros(2, 30, dtype=torch.bool, device=device)
    mask[0], mask[1, :11] = True, True
    out = model(x, mask)
    torch.testing.assert_close(out.logits[1], model(b).logits[0])
    torch.testing.assert_close(out.logits[0], model(a).logits[0])
    assert torch.all(out.attention[1, 11:] == 0)


def test_transformer_mil_is_permutation_invariant(device):
    model, x = _model("transformer_mil", device), torch.randn(50, 24, device=device)
    perm = torch.randperm(50, device=device)
    out, shuffled = model(x), model(x[perm])
    torch.testing.assert_close(out.logits, shuffled.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.attention[0, perm], shuffled.attention[0], atol=1e-6, rtol=1e-4)


def test_transmil_depends_on_order_as_documented(device):
    model, x = _model("transmil", device), torch.randn(50, 24, device=device)
    assert not torch.allclose(model(x).logits, model(x.flip(0)).logits, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_recorded_path_matches_fast_path(name, device):
    model, x = _model(name, device), torch.randn(37, 24, device=device)
    fast, recorded = model(x), model(x, record=True)
    torch.testing.assert_close(fast.logits, recorded.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.attention, recorded.attention, atol=1e-5, rtol=1e-4)
    assert len(model.records) == 2 and model.records[0].matrix.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_weights_only(name, tmp_path, device):
    model, x = _model(name, device), torch.randn(9, 24, device=device)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    config = model.config()
    rebuilt = create_model(
        config["model"], config["in_dim"], config["n_classes"], **config["kwargs"]
    ).to(device)
    rebuilt.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    torch.testing.assert_close(rebuilt.eval()(x).logits, model(x).logits)


@pytest.mark.parametrize("name", NAMES)
def test_predict_chunked_equals_forward(name, device):
    model, x = _model(name, device), torch.randn(45, 24, device=device)
    chunked = model.predict_chunked(lambda s, e: x[s:e], 45, chunk_size=8)
    torch.testing.assert_close(chunked.logits, model(x).logits)


# -- transformer_mil with positional="sincos2d" ------------------------------------------------


def _positional(device: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return (
        create_model(
            "transformer_mil",
            24,
            3,
            hidden_dims=(32,),
            dropout=0.0,
            positional="sincos2d",
            **kwargs,
        )
        .to(device)
        .eval()
    )


def _grid_bag(
    device: str, n: int = 30, side: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[n, 24]`` and distinct grid positions ``[n, 2]`` (column, row) on a side x
    side lattice, in no particular order (drawn on the CPU, then moved to ``device``)."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(side * side, generator=g)[:n]
    coords = torch.stack([cells % side, cells // side], dim=1).float()
    return torch.randn(n, 24, generator=g).to(device), coords.to(device)


def test_sincos_2d_halves_encode_column_then_row():
    from wsi_mil.mil.models.transformers import sincos_2d

    emb = sincos_2d(torch.tensor([[3.0, 5.0], [3.0, 9.0], [7.0, 5.0]]), 32)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb[0, :16], emb[1, :16])  # same column
    torch.testing.assert_close(emb[0, 16:], emb[2, 16:])  # same row
    assert not torch.allclose(emb[0, 16:], emb[1, 16:]) and not torch.allclose(
        emb[0, :16], emb[2, :16]
    )
    # channel 0 is sin(column * 1), channel 8 cos(column * 1) (MAE's layout)
    assert emb[0, 0].item() == pytest.approx(torch.tensor(3.0).sin().item(), abs=1e-6)
    assert emb[0, 8].item() == pytest.approx(torch.tensor(3.0).cos().item(), abs=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(torch.zeros(1, 2), 30)


def test_positional_permuting_tiles_with_their_coords_keeps_the_prediction(device):
    model, (x, coords) = _positional(device), _grid_bag(device)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1)).to(device)
    out, shuffled = model(x, coords=coords), model(x[perm], coords=coords[perm])
    torch.testing.assert_close(out.logits, shuffled.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.attention[0, perm], shuffled.attention[0], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(
        out.tile_logits[0, perm], shuffled.tile_logits[0], atol=1e-5, rtol=1e-4
    )
    # the positions are the tiles' own: shuffling the features alone changes the prediction
    assert not torch.allclose(model(x[perm], coords=coords).logits, out.logits, atol=1e-4)


def test_positional_moving_one_tile_changes_the_prediction(device):
    model, (x, coords) = _positional(device), _grid_bag(device)
    moved = coords.clone()
    moved[0] = torch.tensor([14.0, 3.0])  # off the 10 x 10 lattice: no tile lies there
    assert not torch.allclose(
        model(x, coords=moved).logits, model(x, coords=coords).logits, atol=1e-4
    )
    # the same model without positions is blind to it
    torch.manual_seed(0)
    plain = create_model("transformer_mil", 24, 3, hidden_dims=(32,), dropout=0.0).to(device)
    plain.eval()
    torch.testing.assert_close(plain(x, coords=moved).logits, plain(x, coords=coords).logits)
    torch.testing.assert_close(plain(x, coords=coords).logits, plain(x).logits)


def test_positional_positions_are_relative_to_the_bag(device):
    model, (x, coords) = _positional(device), _grid_bag(device)
    out = model(x, coords=coords)
    shifted = model(x, coords=coords + torch.tensor([137.0, 42.0], device=device))
    torch.testing.assert_close(out.logits, shifted.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.attention, shifted.attention, atol=1e-6, rtol=1e-4)


def test_positional_padded_batch_equals_single_bags(device):
    """Padding positions (0, 0) never enter a bag's origin: bags far from the slide's corner."""
    model = _positional(device)
    (a, ca), (b, cb) = _grid_bag(device, 30, seed=2), _grid_bag(device, 11, seed=3)
    ca, cb = ca + 50, cb + torch.tensor([80.0, 20.0], device=device)
    x, coords = torch.zeros(2, 30, 24, device=device), torch.zeros(2, 30, 2, device=device)
    x[0], x[1, :11], coords[0], coords[1, :11] = a, b, ca, cb
    mask = torch.zeros(2, 30, dtype=torch.bool, device=device)
    mask[0], mask[1, :11] = True, True
    out = model(x, mask, coords=coords)
    torch.testing.assert_close(out.logits[0], model(a, coords=ca).logits[0])
    torch.testing.assert_close(out.logits[1], model(b, coords=cb).logits[0])


def test_positional_without_coords_is_a_clear_error(device):
    model, (x, coords) = _positional(device), _grid_bag(device)
    assert model.uses_coords
    with pytest.raises(
        ValueError,
        match="positional='sincos2d' uses the tiles' positions but "
        "was called without them: pass coords=",
    ):
        model(x)
    with pytest.raises(ValueError, match="without them"):
        model.predict_chunked(lambda s, e: x[s:e], 30)
    with pytest.raises(ValueError, match=r"coords of shape \(29, 2\)"):
        model(x, coords=coords[:29])


def test_positional_setting_is_checked():
    with pytest.raises(ValueError, match="positional='learned'"):
        create_model("transformer_mil", 24, 3, hidden_dims=(32,), positional="learned")
    with pytest.raises(ValueError, match="divisible by 4"):
        create_model("transformer_mil", 24, 3, hidden_dims=(30,), heads=6, positional="sincos2d")
    assert not create_model("transformer_mil", 24, 3, hidden_dims=(32,)).uses_coords


def test_positional_checkpoint_round_trip_weights_only(tmp_path, device):
    model, (x, coords) = _positional(device), _grid_bag(device, 9)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    config = model.config()
    assert config["kwargs"]["positional"] == "sincos2d"
    rebuilt = create_model(
        config["model"], config["in_dim"], config["n_classes"], **config["kwargs"]
    )
    rebuilt.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    rebuilt.to(device).eval()
    assert rebuilt.uses_coords
    torch.testing.assert_close(rebuilt(x, coords=coords).logits, model(x, coords=coords).logits)
    with pytest.raises(ValueError, match="without them"):
        rebuilt(x)


def test_positional_recorded_and_chunked_paths_match_forward(device):
    model, (x, coords) = _positional(device), _grid_bag(device, 37, side=8)
    fast, recorded = model(x, coords=coords), model(x, coords=coords, record=True)
    torch.testing.assert_close(fast.logits, recorded.logits, atol=1e-5, rtol=1e-4)
    chunked = model.predict_chunked(lambda s, e: x[s:e], 37, chunk_size=8, coords=coords)
    torch.testing.assert_close(chunked.logits, fast.logits)


def test_detached_norm_scale_keeps_the_forward_and_makes_layernorm_affine_backward(device):
    model = (
        create_model("transformer_mil", 8, 2, hidden_dims=(16,), dropout=0.0, layers=1, heads=2)
        .to(device)
        .eval()
    )
    x = torch.randn(5, 8, device=device)
    plain = model(x).logits
    with model.detached_norm_scale():
        detached = model(x).logits
    torch.testing.assert_close(detached, plain)
    assert not any(getattr(m, "detach_scale", False) for m in model.modules())  # restored
    z = torch.randn(3, 16, device=device, requires_grad=True)
    model.norm.detach_scale = True
    try:
        (g,) = torch.autograd.grad((model.norm(z) * z.detach()).sum(), z)
    finally:
        model.norm.detach_scale = False
    scale = (z.var(-1, unbiased=False, keepdim=True) + model.norm.eps).rsqrt().detach()
    w = model.norm.weight * z.detach()
    expected = (w - w.mean(-1, keepdim=True)) * scale  # the centring map's adjoint, fixed scale
    torch.testing.assert_close(g, expected)
