"""Training: gated attention-MIL finds planted positive tiles from slide labels alone, and a
run folder is written as the contract says (on the test device, ``WSI_MIL_TEST_DEVICE``)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from wsi_mil.mil.bags import BagDataset
from wsi_mil.mil.models import create_model
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.tasks import class_weights, slide_loss
from wsi_mil.mil.train import make_optimizer, train_fold, train_folds
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


@pytest.fixture
def fast(device) -> dict:
    """Small, quick training settings on the test device (``WSI_MIL_TEST_DEVICE``)."""
    return {
        "hidden_dims": (32,),
        "attention_dim": 16,
        "lr": 2e-3,
        "device": device,
        "bootstrap": 50,
    }


def dataset(bags):
    return BagDataset.from_arrays(
        [b.features for b in bags], [b.label for b in bags], [b.slide_id for b in bags]
    )


def test_gated_abmil_learns_planted_tiles_weakly(fast, device):
    bags = planted_bags(90, (30, 60), 24, planted_fraction=0.1, shift=3.0, seed=0)
    train, val, test = bags[:60], bags[60:70], bags[70:]
    params = TrainParams(epochs=12, patience=12, **fast)
    torch.manual_seed(0)
    model = create_model("gated_abmil", 24, 2, **params.model_kwargs())
    result = train_fold(model, dataset(train), dataset(val), params, negative_index=0, seed=0)
    model = result.model.eval()
    slide_scores, tile_scores, tile_truth = [], [], []
    with torch.no_grad():
        for bag in test:
            out = model(torch.from_numpy(bag.features).to(device))
            slide_scores.append(out.logits.softmax(1)[0, 1].item())
            tile_scores += out.tile_logits.softmax(-1)[0, :, 1].tolist()
            tile_truth += bag.planted.tolist()
    slide_auc = roc_auc_score([b.label for b in test], slide_scores)
    tile_auc = roc_auc_score(tile_truth, tile_scores)
    assert slide_auc >= 0.95, slide_auc
    assert tile_auc >= 0.9, tile_auc


def test_train_run_writes_the_run_folder(tmp_path, fast):
    bags = planted_bags(24, (10, 20), 8, shift=4.0, seed=1)
    features_dir, labels_csv = write_planted_bags(tmp_path, bags, with_tile_labels=True)
    params = TrainParams(folds=3, epochs=2, min_epochs=1, model="clam_sb", k_sample=3, **fast)
    summary = train_folds(features_dir, labels_csv, tmp_path / "run", params)
    run = tmp_path / "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["model"] == "clam_sb" and config["class_names"] == ["neg", "pos"]
    assert config["negative_class"] == "neg" and config["in_dim"] == 8
    assert len((run / "splits.csv").read_text().splitlines()) == 1 + 3 * 24
    for k in range(3):
        fold = run / f"fold_{k}"
        meta = json.loads((fold / "model.json").read_text())
        assert meta["model"] == "clam_sb" and meta["kwargs"]["k_sample"] == 3
        state = torch.load(fold / "model.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        metrics = json.loads((fold / "metrics.json").read_text())
        assert (
            metrics["n_slides"] == len((fold / "test_predictions.csv").read_text().splitlines()) - 1
        )
        assert 0 <= metrics["threshold"] <= 1
        log = (fold / "log.csv").read_text().splitlines()
        assert log[0].startswith("epoch,lr,train_loss") and len(log) == 3
    assert summary["n_folds"] == 3 and len(summary["accuracy"]["values"]) == 3
    saved = json.loads((run / "summary.json").read_text())
    assert saved["accuracy"]["mean"] == pytest.approx(np.mean(saved["accuracy"]["values"]))
    assert saved["pooled_out_of_fold"]["n_slides"] == 24


def test_params_reject_invalid_settings():
    with pytest.raises(ValueError, match="TrainParams.model = 'not_a_model'"):
        TrainParams(model="not_a_model")
    assert TrainParams(hidden_dims=[64, 32]).hidden_dims == (64, 32)


def test_sgd_takes_nesterov_steps_with_l2_decay():
    """``optimizer: sgd`` is MI-Net's: momentum 0.9, Nesterov, L2 decay added to the gradient.
    Two steps on a quadratic, against the update written out by hand."""
    params = TrainParams(optimizer="sgd", lr=0.1, weight_decay=0.01)
    model = torch.nn.Linear(3, 1, bias=False)
    opt = make_optimizer(model.parameters(), params)
    w, velocity = model.weight.detach().clone(), torch.zeros(1, 3)
    for _ in range(2):
        opt.zero_grad()
        (model.weight**2).sum().backward()
        opt.step()
        grad = 2 * w + 0.01 * w
        velocity = 0.9 * velocity + grad
        w = w - 0.1 * (grad + 0.9 * velocity)
    torch.testing.assert_close(model.weight.detach(), w)
    with pytest.raises(ValueError, match="TrainParams.optimizer = 'rmsprop'"):
        TrainParams(optimizer="rmsprop")


def test_positional_setting_reaches_transformer_mil_only():
    """The factory gives each model the settings it declares and drops the others."""
    params = TrainParams(model="transformer_mil", positional="sincos2d")
    model = create_model("transformer_mil", 8, 2, **params.model_kwargs())
    assert model.hparams["positional"] == "sincos2d" and model.uses_coords
    gated = create_model("gated_abmil", 8, 2, **TrainParams().model_kwargs())
    assert "positional" not in gated.hparams and "k_sample" not in gated.hparams
    clam = create_model("clam_sb", 8, 2, **TrainParams(k_sample=3).model_kwargs())
    assert clam.hparams["k_sample"] == 3 and "positional" not in clam.hparams
    with pytest.raises(TypeError, match="no MIL model takes \\['dropuot'\\]"):
        create_model("gated_abmil", 8, 2, dropuot=0.1)
    with pytest.raises(ValueError, match="TrainParams.positional = 'sincos2d'.*transformer_mil"):
        TrainParams(model="gated_abmil", positional="sincos2d")
    with pytest.raises(ValueError, match="TrainParams.positional = 'learned'"):
        TrainParams(model="transformer_mil", positional="learned")
    with pytest.raises(ValueError, match="TrainParams.hidden_dims.*divisible by 4"):
        TrainParams(model="transformer_mil", positional="sincos2d", hidden_dims=(30,))


def test_positional_transformer_trains_and_predicts_with_the_bags_coords(tmp_path, fast, device):
    """The run reads the bags' grid positions for the model (it refuses to run without
    them), model.json rebuilds the positional model, and prediction passes the positions."""
    from wsi_mil.mil.bags import read_grid_coords
    from wsi_mil.mil.predict import load_run, predict_bag

    bags = planted_bags(8, (4, 12), 8, shift=4.0, seed=3)
    features_dir, labels_csv = write_planted_bags(tmp_path, bags)
    params = TrainParams(
        folds=2,
        epochs=1,
        min_epochs=1,
        model="transformer_mil",
        positional="sincos2d",
        batch_size=2,
        max_train_tiles=6,
        **{**fast, "hidden_dims": (16,), "bootstrap": 0},
    )
    train_folds(features_dir, labels_csv, tmp_path / "run", params)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["train"]["positional"] == "sincos2d"
    meta = json.loads((tmp_path / "run" / "fold_0" / "model.json").read_text())
    assert meta["model"] == "transformer_mil" and meta["kwargs"]["positional"] == "sincos2d"
    run = load_run(tmp_path / "run", fold=0, device=device)
    model = run.folds[0].model
    assert model.uses_coords
    bag = features_dir / "slide_0005.h5"
    pred = predict_bag(run, bag, chunk_size=3)
    with h5py.File(bag) as f:
        x = torch.from_numpy(f["features"][:]).float().to(device)
    grid = torch.from_numpy(read_grid_coords(bag)).to(device)
    with torch.no_grad():
        out = model(x, coords=grid)
        moved = grid.clone()
        moved[0] += 40.0
        other = model(x, coords=moved)
    np.testing.assert_allclose(pred.probs, out.logits.softmax(1)[0].cpu().numpy(), atol=1e-5)
    assert not np.allclose(pred.probs, other.logits.softmax(1)[0].cpu().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="without them"):
        model(x)


def test_class_weights_balance_classes():
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights[1] / weights[0] == pytest.approx(3.0)


def test_class_weights_change_the_gradient_of_one_bag():
    # PyTorch's weight= takes a weighted *mean*: for one bag the weight cancels. slide_loss
    # divides by the bag count instead, so a minority-class bag pulls harder.
    torch.manual_seed(0)
    logits = torch.randn(1, 2, requires_grad=True)
    label = torch.tensor([1])
    weights = class_weights([0, 0, 0, 1], 2)  # class 1 is the minority: weight 2, class 0: 2/3
    weighted = torch.autograd.grad(slide_loss(logits, label, weights), logits)[0]
    plain = torch.autograd.grad(slide_loss(logits, label, None), logits)[0]
    torch_mean = torch.autograd.grad(
        torch.nn.functional.cross_entropy(logits, label, weight=weights), logits
    )[0]
    torch.testing.assert_close(torch_mean, plain)  # the defect: the weight had no effect
    torch.testing.assert_close(weighted, 2.0 * plain)
    assert slide_loss(logits, label, weights).item() == pytest.approx(
        2.0 * slide_loss(logits, label, None).item()
    )


@pytest.mark.slow
def test_class_weighting_raises_the_minority_recall(fast, device):
    # 48 training bags, 8 positive; weak planted signal. At the 0.5 cut the unweighted model
    # calls few positives; the weighted one, trained on equal class totals, calls more.
    recalls = {True: [], False: []}
    for seed in range(3):
        bags = planted_bags(200, (20, 30), 16, planted_fraction=0.1, shift=1.2, seed=seed)
        pos = [b for b in bags if b.label][:8]
        neg = [b for b in bags if not b.label]
        train, test = pos + neg[:40], [b for b in bags if b.label][8:48]
        for weighting in (True, False):
            params = TrainParams(
                epochs=15,
                min_epochs=15,
                monitor="none",
                class_weighting=weighting,
                seg_weight=0.0,
                **fast,
            )
            torch.manual_seed(seed)
            model = create_model("gated_abmil", 16, 2, **params.model_kwargs())
            result = train_fold(
                model,
                dataset(train),
                dataset(train[:4] + train[-4:]),
                params,
                negative_index=0,
                seed=seed,
            )
            with torch.no_grad():
                p = [
                    result.model.eval()(torch.from_numpy(b.features).to(device)).logits.softmax(1)[
                        0, 1
                    ]
                    for b in test
                ]
            recalls[weighting].append(float(np.mean([float(v) >= 0.5 for v in p])))
    assert all(w > u for w, u in zip(recalls[True], recalls[False]))
    assert np.mean(recalls[True]) > np.mean(recalls[False]) + 0.1
