"""explain(): each method finds planted tiles in trained models and the faithful ones pass
patch flipping; IG completeness; rollout of one layer; the Chefer rules; the randomisation
check flags a map that ignores the model; methods offered only where they run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from wsi_mil.explain.methods import ExplainError, available_methods, explain, ppeg_mixing_share
from wsi_mil.explain.perturbation import bag_scorer
from wsi_mil.explain.randomisation import randomised_copy
from wsi_mil.metrics.explain import patch_flipping, randomisation_check, tile_ranking
from wsi_mil.mil.bags import BagDataset
from wsi_mil.mil.models import create_model
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.train import train_fold
from wsi_mil.synthetic.bags import planted_bags

#: methods that reach tile AUC >= 0.9 on planted bags for both trained models, except these,
#: held to "clearly better than random" (> 0.6):
#:
#: * Gradient x input is a first-order Taylor term at the tile (Captum's InputXGradient):
#:   through saturated tanh / sigmoid / softmax units and ReLU biases it can be negative for a
#:   planted tile (single bags here score 0.17-0.85 while integrated gradients, the same product
#:   integrated from the zero bag, scores >= 0.9). On the real-tissue collage
#:   (docs/explanations.md) it does not trail attention: a property of saturated toy models,
#:   stated rather than hidden. (The transformer's attention x gradient failed here too, at
#:   0.57, until it took the LN-rule; see wsi_mil.explain.methods.)
#: * Perturbation (drop one, the issue asked for >= 0.9; measured 0.65 for gated_abmil, 0.74
#:   for transformer_mil): with softmax pooling, leaving tile i out changes the logit by
#:   ``a_i / (1 - a_i) * (w . h_i - w . P)`` (P the pooled vector), i.e. by how far the tile
#:   is from the pooled mean. The planted tiles *are* the pooled mean, so about half of them
#:   score below 0 and below the near-zero background: drop one measures redundancy, not
#:   evidence, when several tiles carry the same signal. ``keep_one`` (each tile alone) does
#:   not renormalise and reaches 0.97-0.99. Drop one still passes patch flipping below (it
#:   orders the tiles the model needs most first).
WEAK = {
    "gated_abmil": {"gradient_x_input", "perturbation"},
    "transformer_mil": {"gradient_x_input", "perturbation"},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models train faster on one thread than on threads fighting over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted():
    # 32 bags train; 32 are held out, so each method's mean tile AUC is over 16 positive bags
    bags = planted_bags(64, (60, 100), 32, planted_fraction=0.1, shift=4.0, seed=0)
    return bags[:32], bags[32:]


_TRAINED: dict[tuple[str, str], torch.nn.Module] = {}


def _train(name: str, planted, device: str) -> torch.nn.Module:
    """The model trained on the planted bags (once per session: two tests read it)."""
    if (name, device) not in _TRAINED:
        _TRAINED[name, device] = _fit(name, planted, device)
    return _TRAINED[name, device]


def _fit(name: str, planted, device: str) -> torch.nn.Module:
    train, val = planted
    # the optimiser is pinned (AdamW, weak decay): this tests the explanation methods on a
    # model that found the planted tiles, not the training defaults (with the default Adam and
    # L2 5e-3, transformer_mil's integrated-gradients tile AUC here is 0.87 instead of >= 0.9)
    params = TrainParams(
        model=name,
        hidden_dims=(64,),
        attention_dim=32,
        dropout=0.0,
        epochs=25,
        monitor="none",
        lr=1e-3,
        k_sample=4,
        device=device,
        bootstrap=0,
        optimizer="adamw",
        weight_decay=1e-4,
    )
    extra = {"layers": 1, "heads": 4} if name == "transformer_mil" else {}
    torch.manual_seed(0)
    model = create_model(name, 32, 2, **params.model_kwargs(), **extra)
    data = [
        BagDataset.from_arrays([b.features for b in s], [b.label for b in s]) for s in (train, val)
    ]
    return train_fold(model, data[0], data[1], params, 0, seed=0).model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gated_abmil", "transformer_mil"])
def test_methods_find_planted_tiles(name, planted, device):
    model = _train(name, planted, device)
    positives = [b for b in planted[1] if b.label]
    randomised = randomised_copy(model)
    for method in available_methods(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum's notice about input gradients
            aucs = [
                tile_ranking(
                    explain(model, b.features, method, target=1), b.planted.astype(float)
                ).auc
                for b in positives
            ]
        mean = float(np.mean(aucs))
        if method == "random":
            assert abs(mean - 0.5) < 0.1
            flagged = randomisation_check(
                explain(model, positives[0].features, method),
                explain(randomised, positives[0].features, method),
            )
            assert flagged.flagged  # a map that ignores the model is caught
        elif method in WEAK[name]:
            assert mean > 0.6, (method, aucs)
        else:
            assert mean >= 0.9, (method, aucs)


#: methods that rank tiles by what the model uses (the issue's faithful methods)
FAITHFUL = ("lrp", "perturbation", "integrated_gradients")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gated_abmil", "transformer_mil"])
def test_patch_flipping_separates_faithful_maps_from_random(name, planted, device):
    """Mean over held-out positive bags: MoRF AUPC below the random order's and LeRF above it
    for faithful methods; ``random`` does not meet that test (measured: gated_abmil MoRF
    0.14-0.48 and LeRF 0.94 against 0.77 for random orders; ``random`` 0.82 and 0.86)."""
    model = _train(name, planted, device)
    positives = [b for b in planted[1] if b.label]
    curves = {m: [] for m in (*FAITHFUL, "random")}
    for i, bag in enumerate(positives):
        x = torch.from_numpy(bag.features).float().to(device)
        score = bag_scorer(model, x, None, 1)
        for method, found in curves.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores = explain(model, bag.features, method, target=1, seed=i)
            found.append(patch_flipping(scores, score, steps=10, n_random=3, seed=i))
    for method, found in curves.items():
        morf = np.mean([c.morf_aupc for c in found])
        lerf = np.mean([c.lerf_aupc for c in found])
        chance = np.mean([c.random_aupc for c in found])
        faithful = morf < chance - 0.05 and lerf > chance + 0.02
        assert faithful == (method != "random"), (method, morf, lerf, chance)


def _small(name: str, device: str = "cpu", **kwargs) -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model(name, 16, 2, hidden_dims=(32,), dropout=0.0, **kwargs).to(device).eval()


@pytest.mark.parametrize("name", ["gated_abmil", "transformer_mil", "transmil"])
def test_integrated_gradients_completeness(name, device):
    model, x = _small(name, device), torch.randn(20, 16, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = explain(model, x, "integrated_gradients", target=1, ig_steps=64)
    with torch.no_grad():
        expected = model(x).logits[0, 1] - model(torch.zeros_like(x)).logits[0, 1]
    assert scores.sum() == pytest.approx(float(expected), abs=0.02 * max(1.0, abs(expected)))


def test_rollout_of_one_layer_is_the_residual_mixed_attention_row(device):
    model = _small("transformer_mil", device, layers=1, heads=4)
    x = torch.randn(12, 16, device=device)
    scores = explain(model, x, "rollout")
    with torch.no_grad():
        model(x, record=True)
        a = model.records[0].matrix.mean(0)
    row = 0.5 * a[0] + 0.5 * torch.eye(13, device=device)[0]
    np.testing.assert_allclose(scores, row[1:].double().cpu().numpy(), rtol=1e-5, atol=1e-7)


def test_attention_is_the_pooling_weights_and_random_is_seeded(device):
    model, x = _small("gated_abmil", device), torch.randn(15, 16, device=device)
    with torch.no_grad():
        weights = model(x).attention[0].double().cpu().numpy()
    np.testing.assert_allclose(explain(model, x, "attention"), weights)
    np.testing.assert_array_equal(
        explain(model, x, "random", seed=3), explain(model, x, "random", seed=3)
    )


def test_transformer_only_methods_refused_for_attention_pooling():
    with pytest.raises(ExplainError, match="transformer"):
        explain(_small("gated_abmil"), np.zeros((3, 16)), "rollout")
    with pytest.raises(ExplainError, match="unknown"):
        explain(_small("gated_abmil"), np.zeros((3, 16)), "saliency")
    with pytest.raises(ExplainError, match="chefer_iccv2021"):
        explain(_small("transformer_mil"), np.zeros((3, 16)), "relevance")


@pytest.mark.parametrize("name", ["mean_pool", "max_pool"])
def test_pooling_baselines_are_offered_only_what_runs(name):
    """Their "attention" is not in the graph of the logits: attention x gradient is not
    offered (it used to crash every slide of such a run); everything offered runs."""
    model, x = _small(name), torch.randn(11, 16)
    offered = available_methods(model)
    assert "attention_x_gradient" not in offered and "lrp" in offered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in offered:
            assert np.isfinite(explain(model, x, method, target=1)).all()
    with pytest.raises(ExplainError, match="not in the graph"):
        explain(model, x, "attention_x_gradient")


def test_quadratic_methods_refuse_huge_bags():
    for method in ("chefer_iccv2021", "chefer_cvpr2021", "rollout"):
        with pytest.raises(ExplainError, match="refused"):
            explain(_small("transformer_mil"), np.zeros((30, 16)), method, max_quadratic_tiles=20)


def test_chefer_rules_differ_by_the_relevance_that_weights_the_gradient():
    """ICCV 2021 weights the attention gradient by the attention, CVPR 2021 by its LRP
    relevance (A dy~/dA, normalised to 1 at the logit): recomputed here for one layer."""
    model, x = _small("transformer_mil", layers=1, heads=4), torch.randn(10, 16)
    logit = model(x, record=True).logits[0, 1]
    a = model.records[0].matrix
    (grad,) = torch.autograd.grad(logit, a)
    with model.lrp_rules():
        ruled = model(x, record=True).logits[0, 1]
        b = model.records[0].matrix
        (ruled_grad,) = torch.autograd.grad(ruled, b)
    with torch.no_grad():
        iccv = (torch.eye(11) + (grad * a).clamp_min(0).mean(0))[0, 1:]
        cvpr = (torch.eye(11) + (grad * b * ruled_grad / ruled.abs()).clamp_min(0).mean(0))[0, 1:]
    np.testing.assert_allclose(
        explain(model, x, "chefer_iccv2021", target=1), iccv.double().numpy(), rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(
        explain(model, x, "chefer_cvpr2021", target=1), cvpr.double().numpy(), rtol=1e-4, atol=1e-7
    )
    assert not np.allclose(iccv.numpy(), cvpr.numpy())
    for target in (0, 1):  # one of the two logits is negative: the map must still rank tiles
        assert np.ptp(explain(model, x, "chefer_cvpr2021", target=target)) > 0


def test_ppeg_mixing_share_is_measured_on_transmil_only():
    model, x = _small("transmil"), torch.randn(30, 16)
    assert ppeg_mixing_share(model, x) > 0.01
    with torch.no_grad():
        for p in model.ppeg.parameters():
            p.zero_()  # PPEG reduced to its identity branch: it mixes nothing
    assert ppeg_mixing_share(model, x) == 0.0
    with pytest.raises(ExplainError, match="PPEG"):
        ppeg_mixing_share(_small("transformer_mil"), torch.randn(30, 16))


def test_randomised_copy_changes_every_weight_and_keeps_the_original(device):
    model = _small("transmil", device)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = randomised_copy(model, seed=5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    changed = [
        not torch.equal(v, before[k])
        for k, v in clone.state_dict().items()
        if v.is_floating_point() and before[k].numel() > 1 and before[k].std() > 0
    ]
    assert all(changed)
