"""The shortcut audit on generated cohorts: a site colour cast that goes with the label is
flagged; the same cohort without the cast, and with labels independent of the site, passes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from features.bag import write_bag
from features.stain import tile_qc
from tiling.tiles_file import read_tiles_file, write_tiles_file
from wsi_mil.metrics.params import AuditParams
from wsi_mil.pipeline.audit import AuditError, audit_cohort

SITES = ("north", "south", "east")
#: Per-site RGB gain: the colour cast a site's stain and scanner put on every tile.
CAST = {"north": (1.0, 1.0, 1.0), "south": (1.12, 0.9, 0.95), "east": (0.9, 0.95, 1.12)}
TILE = 32


def tissue_tile(rng: np.random.Generator, positive: bool) -> np.ndarray:
    """A pink tile with purple nuclei (more of them when positive), as uint8 RGB."""
    tile = np.empty((TILE, TILE, 3), np.float64)
    tile[:] = (225, 160, 190)
    nuclei = rng.random((TILE, TILE)) < (0.25 if positive else 0.15)
    tile[nuclei] = (110, 70, 150)
    tile += rng.normal(0, 8, tile.shape)
    return np.clip(tile, 0, 255).astype(np.uint8)


def colour_features(tiles: np.ndarray) -> np.ndarray:
    """A stand-in encoder: per tile, channel means and deviations, and their ratios, as
    foundation-model features carry a tile's colour along with its content."""
    x = tiles.reshape(len(tiles), -1, 3).astype(np.float64) / 255.0
    mean, std = x.mean(1), x.std(1)
    return np.concatenate([mean, std, mean[:, :1] / mean[:, 2:]], axis=1).astype(np.float32)


def write_cohort(root, cast: bool, label_follows_site: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    attrs = {
        "slide_path": "x.svs",
        "slide_width": 512,
        "slide_height": 512,
        "slide_mpp": 0.5,
        "mpp_source": "metadata",
        "target_mpp": 0.5,
        "tile_size": TILE,
        "tile_size_level0": TILE,
        "read_level": 0,
        "read_downsample": 1.0,
        "stride": TILE,
        "min_tissue": 0.0,
        "tissue_method": "otsu",
        "tissue_params": {},
    }
    encoder = {
        "encoder": "colour",
        "encoder_dim": 7,
        "weights": "none",
        "weights_sha256": "",
        "input_size": TILE,
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
        "dtype": "float32",
        "tile_qc_columns": ["focus", "background", "pen"],
    }
    rows = ["slide_id,label,site"]
    for i in range(30):
        site = SITES[i % 3]
        if label_follows_site:  # north mostly negative, south and east mostly positive
            positive = (site != "north") != (rng.random() < 0.1)
        else:
            positive = bool(i // 3 % 2)
        tiles = np.stack([tissue_tile(rng, positive) for _ in range(10)])
        if cast:
            tiles = np.clip(tiles * np.array(CAST[site]), 0, 255).astype(np.uint8)
        slide_id = f"s{i:02d}"
        coords = np.array([[TILE * k, 0] for k in range(10)])
        tiles_file = read_tiles_file(
            write_tiles_file(
                root / "tiles" / f"{slide_id}.h5",
                coords,
                np.ones(10),
                {**attrs, "slide_id": slide_id},
            )
        )
        write_bag(
            root / "features" / f"{slide_id}.h5",
            colour_features(tiles),
            tiles_file,
            encoder,
            {"tile_qc": np.stack([tile_qc(t) for t in tiles])},
        )
        rows.append(f"{slide_id},{'pos' if positive else 'neg'},{site}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "features", root / "labels.csv"


FAST = AuditParams(permutations=20, folds=3)  # p-values down to 1/21: enough to tell


@pytest.mark.slow
def test_a_site_cast_that_goes_with_the_label_is_flagged(tmp_path):
    features, labels = write_cohort(tmp_path, cast=True, label_follows_site=True)
    report = audit_cohort(features, labels, tmp_path / "audit", FAST)
    assert report["verdict"].startswith("SHORTCUT RISK")
    probe = report["probe_mean_features"]
    assert probe["balanced_accuracy"] > 0.8 and probe["chance"] == pytest.approx(1 / 3)
    assert probe["p_value"] < 0.05
    assert report["site_label_association"]["cramers_v"] > 0.5
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["verdict"] == report["verdict"]
    assert "SHORTCUT RISK" in (tmp_path / "audit" / "audit.md").read_text()


def test_a_cohort_without_cast_or_confounding_passes(tmp_path):
    features, labels = write_cohort(tmp_path, cast=False, label_follows_site=False)
    report = audit_cohort(features, labels, tmp_path / "audit", FAST)
    assert report["verdict"].startswith("PASS"), report["verdict"]
    assert report["probe_mean_features"]["p_value"] >= 0.05
    assert report["site_label_association"]["p_value"] >= 0.05
    assert report["tile_qc"]["flagged_tile_share"] < 0.05


@pytest.mark.slow
def test_a_trained_run_is_probed_too(tmp_path):
    """With a run: its attention-pooled embedding carries the cast, and its attention on
    flagged tiles is measured (none of these tiles is glass, pen or blurred)."""
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.train import train_folds

    features, labels = write_cohort(tmp_path, cast=True, label_follows_site=True, seed=1)
    train_folds(
        features,
        labels,
        tmp_path / "run",
        TrainParams(
            folds=2,
            epochs=2,
            min_epochs=1,
            hidden_dims=(8,),
            attention_dim=4,
            bootstrap=0,
            device="cpu",
        ),
    )
    report = audit_cohort(features, labels, tmp_path / "audit", FAST, run_dir=tmp_path / "run")
    run_probe = report["probe_run_embedding"]
    assert run_probe["in_sample"] and run_probe["n_slides"] == 30
    assert report["attention_on_flagged"]["mean_tile_share"] == 0.0
    assert report["verdict"].startswith("SHORTCUT RISK")


def test_a_missing_site_column_is_named(tmp_path):
    features, labels = write_cohort(tmp_path, cast=False, label_follows_site=False)
    with pytest.raises(AuditError, match="no 'hospital' column"):
        audit_cohort(features, labels, tmp_path / "audit", AuditParams(column="hospital"))
