"""Explanations of trained segmenters on held-out generated slides with planted lesions, scored
in the lesion-border windows (lesion share 5-95 %, where a map's place is a real question).

An Attention U-Net and a UNETR are trained for a few epochs (through ``segment-train``) and
explain their masks (through ``segment --explain``). What holds, and is asserted: integrated
gradients (both), Grad-CAM at the Attention U-Net's bottleneck and UNETR's relevance put more
than half of their mass inside the lesion, above the lesion's share of the window that a
uniform map gets, and beat random noise on the pointing game; the gates depend on the trained
weights (not flagged by the randomisation check) and are not spread like noise over lesion
and non-lesion. What the issue also asked and is **not** asserted: that the Attention U-Net's
gates and UNETR's attention rollout put more than half their mass in the lesion. The gates open
on the tissue around the lesion (their mass in it is below a uniform map's, in the benchmark
and in trials while building this); rollout, class-agnostic through twelve residual-mixed
layers, landed above a uniform map in the benchmark and below it in a trial. The numbers are in
docs/segmentation.md.
"""

from __future__ import annotations

import json

import pytest

from tiling.params import TilingParams
from tiling.pipeline import tile_slide
from wsi_mil.cli import main
from wsi_mil.pipeline.cohort import generate_cohort
from wsi_mil.synthetic.params import CohortParams
from wsi_mil.synthetic.predictions import annotation_prediction

pytestmark = pytest.mark.slow

TRAIN = [
    "--mpp",
    "2.0",
    "--tile-size",
    "64",
    "--channels",
    "8",
    "16",
    "32",
    "--tiles-per-slide",
    "40",
    "--epochs",
    "10",
    "--lr",
    "0.003",
    "--unetr-hidden-size",
    "96",
    "--unetr-feature-size",
    "8",
]


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """Per network, the cohort means (over the held-out tumour slides) of explain.json."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained_explain")
    cohort = generate_cohort(
        root / "cohort",
        CohortParams(
            train_normal=1, train_tumor=4, test_normal=0, test_tumor=2, size_px=2048, seed=1
        ),
    )
    for slide in (s for s in cohort.slides if s.split == "test"):
        tiles = tile_slide(slide.path, root / "tiled", TilingParams(target_mpp=1.0, tile_size=128))
        annotation_prediction(
            tiles, slide.annotation, root / "predictions" / f"{slide.slide_id}.h5"
        )
    means = {}
    for net in ("attention_unet", "unetr"):
        assert (
            main(
                [
                    "segment-train",
                    "--slides",
                    str(cohort.slides_dir),
                    "--annotations",
                    str(cohort.annotations_dir),
                    "--labels",
                    str(cohort.labels_csv),
                    "--split",
                    "train",
                    "--model",
                    str(root / net),
                    "--net",
                    net,
                    *TRAIN,
                ]
            )
            == 0
        )
        out = root / f"out_{net}"
        assert (
            main(
                [
                    "segment",
                    "--predictions",
                    str(root / "predictions"),
                    "--model",
                    str(root / net),
                    "--out",
                    str(out),
                    "--annotations",
                    str(cohort.annotations_dir),
                    "--explain",
                    "attention_rollout",
                    "relevance",
                    "gradcam",
                    "attention_gates",
                    "integrated_gradients",
                    "random",
                    "--explain-ig-steps",
                    "8",
                    "--explain-score-windows",
                    "3",
                    "--explain-perturbation-steps",
                    "0",
                    "--explain-figure-windows",
                    "0",
                ]
            )
            == 0
        )
        summaries = [json.loads(p.read_text()) for p in sorted(out.glob("segment/*/explain.json"))]
        assert summaries and all(s["scored_windows"] > 0 for s in summaries)
        names = summaries[0]["summary"]
        means[net] = {
            name: {
                key: sum(s["summary"][name][key] for s in summaries) / len(summaries)
                for key in names[name]
            }
            for name in names
        }
    return means


@pytest.mark.parametrize(
    "net, method",
    [
        ("attention_unet", "integrated_gradients"),
        ("attention_unet", "gradcam"),
        ("unetr", "integrated_gradients"),
        ("unetr", "relevance"),
    ],
)
def test_the_map_puts_most_of_its_mass_inside_the_lesion(explained, net, method):
    scores, noise = explained[net][method], explained[net]["random"]
    assert scores["mass_share"] > 0.5, scores
    assert scores["mass_share"] > scores["lesion_share"] + 0.1, scores
    assert scores["pointing"] > noise["pointing"], (scores, noise)


def test_random_scores_chance_and_fails_the_sanity_check(explained):
    for net in explained:
        noise = explained[net]["random"]
        assert noise["mass_share"] == pytest.approx(noise["lesion_share"], abs=0.03)
        assert noise["sanity_flagged"] == 1.0


def test_the_gates_depend_on_the_weights_and_on_the_lesion(explained):
    gates = explained["attention_unet"]["attention_gates"]
    assert gates["sanity_flagged"] < 0.5
    assert abs(gates["mass_share"] - gates["lesion_share"]) > 0.05, gates
