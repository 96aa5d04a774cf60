"""``scripts/bench_mil_classic.py`` trains stacked networks: the same forward pass and the same
optimiser steps (SGD with Nesterov momentum, Adam) as the library's models trained one by one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.train import make_optimizer

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_mil_classic.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_mil_classic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("model_name", ["abmil", "gated_abmil"])
def test_stacked_training_equals_the_library_models(model_name, optimizer):
    bench = _bench()
    params = TrainParams(
        model=model_name,
        hidden_dims=(12, 6),
        attention_dim=5,
        dropout=0.0,
        optimizer=optimizer,
        lr=1e-2,
        weight_decay=5e-3,
        device="cpu",
    )
    models = bench.library_models(model_name, params, 7, [0, 1, 2])
    leaves = bench.stacked_leaves(models)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 5, 7, generator=gen)  # 3 networks, 2 bags each, up to 5 instances
    mask = torch.ones(3, 2, 5, dtype=torch.bool)
    mask[:, 1, 3:] = False
    y = torch.tensor([[0, 1], [1, 0], [1, 1]])
    bench.check_stacked_forward(models, leaves, model_name, x, mask)

    opt = bench.stacked_optimizer(leaves, params)  # the script's own (stacked) optimiser
    singles = [
        make_optimizer(m.parameters(), params) for m in models
    ]  # the library's, one per network
    for b in range(2):  # one bag per network per step, as the benchmark trains
        logits = bench.stacked_logits(
            leaves, model_name, 2, x[:, b : b + 1], mask[:, b : b + 1], 0.0, True
        )[:, 0]
        opt.zero_grad()
        F.cross_entropy(logits, y[:, b], reduction="sum").backward()
        opt.step()
        for i, (model, single) in enumerate(zip(models, singles)):
            model.train()
            out = model(x[i, b][mask[i, b]])
            single.zero_grad()
            F.cross_entropy(out.logits, y[i, b : b + 1]).backward()
            single.step()
    stacked = bench.library_state(leaves)
    for i, model in enumerate(models):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(stacked[name][i], value, atol=1e-5, rtol=1e-4)


def test_dropout_zeroes_a_fraction_p_and_rescales_the_rest():
    bench = _bench()
    torch.manual_seed(0)
    h = torch.rand(200, 500) + 0.5  # no zeros of its own
    out = bench.dropout(h, 0.25, True)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.01
    kept = out != 0
    torch.testing.assert_close(out[kept], h[kept] / 0.75)
    assert bench.dropout(h, 0.25, False) is h
