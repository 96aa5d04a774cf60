"""Every registered model: the attention contract, permutation invariance, one-tile bags,
padded batches, chunked prediction and checkpoint round trips, on the test device
(``WSI_MIL_TEST_DEVICE``)."""

from __future__ import annotations

import pytest
import torch

from wsi_mil.mil.models import create_model, list_models
from wsi_mil.mil.models.clam import top_bottom_k

MODELS = list_models()
DIM, CLASSES = 12, 3


def make(name: str, device: str, n_classes: int = CLASSES):
    torch.manual_seed(0)
    return create_model(name, DIM, n_classes, hidden_dims=(16,), attention_dim=8).to(device).eval()


def test_registry_lists_all_models_and_rejects_unknown():
    assert set(MODELS) == {
        "gated_abmil",
        "abmil",
        "clam_sb",
        "clam_mb",
        "mean_pool",
        "max_pool",
        "transformer_mil",
        "transmil",
    }
    with pytest.raises(ValueError, match="unknown MIL model 'not_a_model'"):
        create_model("not_a_model", DIM, 2)


#: TransMIL's PPEG convolves the tiles in sequence order: by design it is not permutation
#: invariant (tests/wsi_mil/mil/models/test_transformers.py checks that it depends on order).
ORDER_DEPENDENT = {"transmil"}


@pytest.mark.parametrize("name", [m for m in MODELS if m not in ORDER_DEPENDENT])
def test_permutation_invariance(name, device):
    model = make(name, device)
    x = torch.randn(23, DIM, device=device)
    perm = torch.randperm(23, device=device)
    with torch.no_grad():
        a, b = model(x), model(x[perm])
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.attention[0][perm], b.attention[0], atol=1e-6, rtol=1e-5)


def test_max_pool_shares_tied_dimensions_without_favouring_the_first_tile(device):
    """Dead ReLU units are 0 on every tile: a tie each tile holds, so it is split equally
    (argmax would credit all of them to tile 0)."""
    model = make("max_pool", device)
    with torch.no_grad():
        for p in model.embed.parameters():
            p.zero_()  # every unit dead: all 16 dimensions tied across the 5 tiles
        weights = model(torch.randn(5, DIM, device=device)).attention[0]
        chunked = model.predict_chunked(
            lambda s, e: torch.randn(e - s, DIM, device=device), 5, chunk_size=2
        )
    even = torch.full((5,), 0.2, device=device)
    torch.testing.assert_close(weights, even)
    torch.testing.assert_close(chunked.attention[0].to(device), even)


@pytest.mark.parametrize("name", MODELS)
def test_attention_sums_to_one_and_is_zero_on_padding(name, device):
    model = make(name, device)
    x = torch.randn(3, 10, DIM, device=device)
    mask = torch.ones(3, 10, dtype=torch.bool, device=device)
    mask[1, 4:] = False
    mask[2, 1:] = False
    x[~mask] = 1e3  # padding content must not matter
    with torch.no_grad():
        out = model(x, mask)
        alone = model(x[1, :4])
    torch.testing.assert_close(out.attention.sum(1), torch.ones(3, device=device))
    assert (out.attention[~mask] == 0).all() and (out.raw_attention[~mask] == 0).all()
    assert (out.attention >= 0).all()
    torch.testing.assert_close(out.logits[1], alone.logits[0], atol=1e-5, rtol=1e-5)
    assert out.tile_logits.shape == (3, 10, CLASSES)


@pytest.mark.parametrize("name", MODELS)
def test_one_tile_bag_trains(name, device):
    model = make(name, device, n_classes=2).train()
    label = torch.tensor([1], device=device)
    out = model(torch.randn(1, DIM, device=device), labels=label)
    assert out.attention.tolist() == [[1.0]]
    loss = torch.nn.functional.cross_entropy(out.logits, label)
    if out.instance_loss is not None:
        loss = loss + out.instance_loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_chunked_prediction_equals_forward(name, device):
    model = make(name, device)
    x = torch.randn(50, DIM, device=device)
    with torch.no_grad():
        full = model(x)
    chunked = model.predict_chunked(lambda s, e: x[s:e], 50, chunk_size=7)
    torch.testing.assert_close(chunked.logits, full.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.attention, full.attention, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked.tile_logits, full.tile_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_weights_only(name, tmp_path, device):
    model = make(name, device)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    config = model.config()
    rebuilt = (
        create_model(config["model"], config["in_dim"], config["n_classes"], **config["kwargs"])
        .to(device)
        .eval()
    )
    rebuilt.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(9, DIM, device=device)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x).logits, model(x).logits)


@pytest.mark.parametrize("name", MODELS)
def test_coords_are_accepted_and_ignored_by_default(name, device):
    """Every model takes ``coords`` (forward, padded batches, chunked prediction); none uses
    them with its default settings, so they change nothing."""
    model = make(name, device)
    assert not model.uses_coords
    x = torch.randn(2, 9, DIM, device=device)
    coords = torch.randint(0, 50, (2, 9, 2), device=device).float()
    mask = torch.ones(2, 9, dtype=torch.bool, device=device)
    mask[1, 5:] = False
    with torch.no_grad():
        plain, with_coords = model(x, mask), model(x, mask, coords=coords)
    torch.testing.assert_close(with_coords.logits, plain.logits)
    chunked = model.predict_chunked(lambda s, e: x[0, s:e], 9, chunk_size=4, coords=coords[0])
    torch.testing.assert_close(chunked.logits, plain.logits[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["clam_sb", "clam_mb"])
def test_clam_instance_loss_with_padding(name, device):
    model = make(name, device, n_classes=2).train()
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]], device=device)
    out = model(
        torch.randn(2, 5, DIM, device=device), mask, labels=torch.tensor([0, 1], device=device)
    )
    assert out.instance_loss is not None and torch.isfinite(out.instance_loss)
    assert out.branch_attention.shape[-1] == (2 if name == "clam_mb" else 1)


def test_top_bottom_k_caps_and_never_overlaps():
    scores = torch.tensor([0.1, 0.9, 0.5])
    top, bottom = top_bottom_k(scores, 8)
    assert top.tolist() == [1, 2] and bottom.tolist() == [0]
    top, bottom = top_bottom_k(scores, 1)
    assert top.tolist() == [1] and bottom.tolist() == [0]
    top, bottom = top_bottom_k(torch.tensor([0.3]), 8)
    assert top.tolist() == [0] and bottom.numel() == 0
