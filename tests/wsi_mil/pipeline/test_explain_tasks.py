"""The explained quantity follows the task (on the test device, ``WSI_MIL_TEST_DEVICE``): a
discrete-time survival model is explained through its risk (integrated gradients'
completeness: the attributions add up to the risk of the bag minus the risk of the all-zero
bag), and so are its perturbations, LRP and patch flipping; a Cox model through its risk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from features.bag import read_bag_features
from wsi_mil.explain.params import ExplainParams
from wsi_mil.explain.store import EXPLANATIONS, read_explanations
from wsi_mil.mil.models import create_model
from wsi_mil.mil.tasks import risk_view
from wsi_mil.mil.train import save_model
from wsi_mil.pipeline.explain import explain_slide
from wsi_mil.synthetic.bags import iter_task_bags, write_planted_bags


def random_run(root, task_meta: dict, n_outputs: int, dim: int):
    """A one-fold run folder with random weights of the right architecture."""
    torch.manual_seed(0)
    model = create_model(
        "gated_abmil", dim, n_outputs, hidden_dims=[16], attention_dim=8, segmentation_head=False
    )
    save_model(
        root / "run" / "fold_0",
        model,
        {"encoder": "planted", "fold": 0, "threshold": None, **task_meta},
    )
    return model


@pytest.mark.parametrize("loss", ["nll", "cox"])
def test_survival_explanations_explain_the_risk(tmp_path, loss, device):
    bags = list(iter_task_bags("survival", 2, 10, 6, seed=0))
    features, _ = write_planted_bags(tmp_path, bags, task="survival")
    n = 3 if loss == "nll" else 1
    meta = {
        "task": "survival",
        "class_names": ["risk"],
        "negative_class": None,
        "segmentation": None,
        "task_params": {"survival_loss": loss},
        "bin_edges": [0.0, 5.0, 20.0, float("inf")],
        "survival_times": [5.0, 10.0],
        "risk_offset": 0.0,
    }
    model = random_run(tmp_path, meta, n, 6).eval()
    bag = features / f"{bags[0].slide_id}.h5"
    params = ExplainParams(
        methods=(
            "integrated_gradients",
            "segmentation",
            "attention",
            "perturbation",
            "keep_one",
            "lrp",
        ),
        sanity=True,
        figure=False,
        gradcam_topk=0,
        ig_steps=256,
        flip_steps=4,
        device=device,
    )
    explain_slide(bag, tmp_path / "explain", tmp_path / "run", params)
    stored = read_explanations(tmp_path / "explain" / EXPLANATIONS)
    maps, attrs = stored.maps, stored.attrs
    assert attrs["target_class"] == "risk"
    x = torch.from_numpy(read_bag_features(bag).astype(np.float32)).to(device)  # as stored
    model.to(device)
    quantity = risk_view(model) if loss == "nll" else model
    with torch.no_grad():
        gap = float(quantity(x).logits[0, 0] - quantity(torch.zeros_like(x)).logits[0, 0])
        tiles = quantity(x).tile_logits[0, :, 0].cpu().numpy()
    assert maps["integrated_gradients"].sum() == pytest.approx(gap, rel=0.02, abs=1e-4)
    # the "segmentation" map of a task without a head: each tile's own risk
    assert np.allclose(maps["segmentation"], tiles, atol=1e-5)
    # the methods that look inside the model see the explained quantity too: leaving a tile out
    # changes the risk by what the perturbation map says, and patch flipping starts at the risk
    with torch.no_grad():
        full = float(quantity(x).logits[0, 0])
        without = float(quantity(x[1:]).logits[0, 0])
    assert maps["perturbation"][0] == pytest.approx(full - without, abs=1e-4)
    assert attrs["patch_flipping"]["perturbation"]["morf"][0] == pytest.approx(full, abs=1e-4)
    assert set(attrs["mprt"]) >= {"stages", "lrp", "keep_one"}
