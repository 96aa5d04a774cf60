"""Stain normalisation, HED augmentation, tile QC, and their place in extraction."""

from __future__ import annotations

import numpy as np
import pytest

from features.stain import (
    StainError,
    StainNormaliser,
    cohort_montage,
    hed_jitter,
    tile_qc,
)

#: Ruifrok & Johnston's haematoxylin and eosin optical-density vectors (unit length).
H_RUIFROK = np.array([0.650, 0.704, 0.286])
E_RUIFROK = np.array([0.072, 0.990, 0.105])
#: Another lab's stain: bluer haematoxylin, pinker eosin.
H_OTHER = np.array([0.55, 0.75, 0.37])
E_OTHER = np.array([0.16, 0.95, 0.27])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def render(
    h: np.ndarray, e: np.ndarray, size: int = 96, seed: int = 0, io: float = 240.0
) -> np.ndarray:
    """An H&E image from Beer-Lambert: per pixel, concentrations of two known stains (some
    pixels nearly pure haematoxylin, some nearly pure eosin, most mixed, a little glass)."""
    rng = np.random.default_rng(seed)
    n = size * size
    c = np.stack([rng.gamma(2.0, 0.35, n), rng.gamma(2.0, 0.35, n)])
    kind = rng.random(n)
    c[1, kind < 0.2] *= 0.02  # nuclei: haematoxylin only
    c[0, (kind >= 0.2) & (kind < 0.45)] *= 0.02  # stroma: eosin only
    c[:, kind > 0.95] = 0.0  # glass
    od = np.stack([unit(h), unit(e)], axis=1) @ c
    rgb = np.clip(io * np.exp(-od) - 1, 0, 255)
    return rgb.T.reshape(size, size, 3).astype(np.uint8)


def test_macenko_recovers_the_stain_matrix_of_a_generated_image():
    image = render(H_RUIFROK, E_RUIFROK, size=128)
    fitted = StainNormaliser.fit("macenko", image, "generated")
    matrix = np.asarray(fitted.reference["stain_matrix"])  # columns: haematoxylin, eosin
    assert matrix.shape == (3, 2)
    assert unit(matrix[:, 0]) @ unit(H_RUIFROK) > 0.995
    assert unit(matrix[:, 1]) @ unit(E_RUIFROK) > 0.995
    other = StainNormaliser.fit("macenko", render(H_OTHER, E_OTHER, size=128), "other")
    other_matrix = np.asarray(other.reference["stain_matrix"])
    assert unit(other_matrix[:, 0]) @ unit(H_OTHER) > 0.995
    assert unit(other_matrix[:, 1]) @ unit(E_OTHER) > 0.995
    assert unit(other_matrix[:, 1]) @ unit(E_RUIFROK) < 0.99  # the two labs are told apart


def test_macenko_moves_another_stain_to_the_reference():
    """The same tissue stained the other lab's way, normalised to the Ruifrok-stained image,
    comes much closer to the Ruifrok rendering than it started."""
    reference = render(H_RUIFROK, E_RUIFROK, seed=1)
    same_tissue = render(H_RUIFROK, E_RUIFROK, seed=2)
    other_lab = render(H_OTHER, E_OTHER, seed=2)
    normalised = StainNormaliser.fit("macenko", reference, "ref")(other_lab)
    before = np.abs(other_lab.astype(int) - same_tissue).mean()
    after = np.abs(normalised.astype(int) - same_tissue).mean()
    assert after < 0.5 * before


def test_reinhard_matches_the_reference_lab_statistics():
    from skimage.color import rgb2lab

    reference = render(H_RUIFROK, E_RUIFROK, seed=3)
    fitted = StainNormaliser.fit("reinhard", reference, "ref")
    out = fitted(render(H_OTHER, E_OTHER, seed=4))
    lab_out, lab_ref = rgb2lab(out), rgb2lab(reference)
    np.testing.assert_allclose(
        lab_out.reshape(-1, 3).mean(0), lab_ref.reshape(-1, 3).mean(0), atol=2.0
    )


def test_glass_is_passed_through_and_bad_targets_are_named(tmp_path):
    fitted = StainNormaliser.fit("macenko", render(H_RUIFROK, E_RUIFROK), "ref")
    glass = np.full((32, 32, 3), 245, np.uint8)
    assert np.array_equal(fitted(glass), glass)
    with pytest.raises(StainError, match="too little stained tissue"):
        StainNormaliser.fit("macenko", glass, "blank.png")
    from features.stain import read_target_image

    with pytest.raises(StainError, match="missing.png: stain target image not found"):
        read_target_image(tmp_path / "missing.png")


def test_hed_jitter_changes_stain_not_structure():
    image = render(H_RUIFROK, E_RUIFROK, seed=5)
    a = hed_jitter(image, np.random.default_rng(0), 0.05)
    b = hed_jitter(image, np.random.default_rng(0), 0.05)
    c = hed_jitter(image, np.random.default_rng(1), 0.05)
    assert np.array_equal(a, b) and not np.array_equal(a, c)

    def grey(x: np.ndarray) -> np.ndarray:
        return x.astype(float).mean(-1).ravel()

    assert np.corrcoef(grey(image), grey(a))[0, 1] > 0.95


def test_tile_qc_sees_glass_pen_and_blur():
    import cv2

    tissue = render(H_RUIFROK, E_RUIFROK, size=128, seed=6)
    focus, background, pen = tile_qc(tissue)
    assert background < 0.2 and pen < 0.05
    assert tile_qc(np.full((128, 128, 3), 240, np.uint8))[1] > 0.95
    ink = tissue.copy()
    ink[:, :80] = (30, 60, 160)  # blue marker over 62 % of the tile
    assert tile_qc(ink)[2] > 0.5
    blurred = cv2.GaussianBlur(tissue, (0, 0), 4)
    assert tile_qc(blurred)[0] < 0.1 * focus


def test_cohort_montage_pools_the_tiles():
    tiles = [np.full((8, 8, 3), i, np.uint8) for i in range(5)]
    montage = cohort_montage(tiles)
    assert montage.shape == (16, 24, 3) and montage[8, 8, 0] == 4 and montage[-1, -1, 0] == 255


def test_extraction_records_stain_qc_views_and_a_trident_copy(
    tmp_path, make_tiles, generated_slide, lite0
):
    from features.bag import read_bag_attrs, read_bag_dataset, read_bag_features
    from features.dataset import TileDataset
    from features.extract import ExtractParams, bag_is_current, extract_slide, fit_stain_reference

    tiles = make_tiles(coords=make_tiles().coords[:6])
    params = ExtractParams(
        device="cpu",
        progress=False,
        tile_readers=0,
        dtype="float32",
        stain="reinhard",
        stain_views=2,
        format="trident",
    )
    normaliser = fit_stain_reference(params, [TileDataset(tiles, generated_slide, 224)])
    assert normaliser.target.startswith("cohort (6 tiles of 1 slides")
    out = extract_slide(
        tiles.path, generated_slide, tmp_path / "out" / "lite0" / "g.h5", lite0, params, normaliser
    )
    attrs = read_bag_attrs(out)
    assert attrs["stain_method"] == "reinhard" and attrs["stain_views"] == 2
    assert attrs["tile_qc_columns"] == ["focus", "background", "pen"]
    qc = read_bag_dataset(out, "tile_qc")
    views = read_bag_dataset(out, "stain_views")
    plain = read_bag_features(out)
    assert qc.shape == (6, 3) and views.shape == (6, 2, 1280)
    assert not np.allclose(views[:, 0], plain) and not np.allclose(views[:, 0], views[:, 1])
    assert bag_is_current(out, tiles.path, lite0, "float32", params)
    assert not bag_is_current(
        out, tiles.path, lite0, "float32", ExtractParams(stain="macenko", dtype="float32")
    )
    copies = list((tmp_path / "out" / "trident").rglob("*.h5"))
    assert len(copies) == 1 and copies[0].parent.name == "features_lite0"


def test_training_samples_the_stain_views(tmp_path):
    """BagDataset(stain_views=True) reads a bag's plain features or one of its views."""
    from features.bag import write_bag
    from tiling.tiles_file import read_tiles_file, write_tiles_file
    from wsi_mil.mil.bags import BagDataset, BagRecord

    attrs = {
        "slide_path": "x.svs",
        "slide_id": "s",
        "slide_width": 100,
        "slide_height": 100,
        "slide_mpp": 0.25,
        "mpp_source": "metadata",
        "target_mpp": 0.5,
        "tile_size": 10,
        "tile_size_level0": 20,
        "read_level": 0,
        "read_downsample": 1.0,
        "stride": 20,
        "min_tissue": 0.0,
        "tissue_method": "otsu",
        "tissue_params": {},
    }
    tiles = read_tiles_file(write_tiles_file(tmp_path / "t.h5", [[0, 0], [20, 0]], [1, 1], attrs))
    encoder = {
        "encoder": "toy",
        "encoder_dim": 2,
        "weights": "none",
        "weights_sha256": "",
        "input_size": 10,
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
        "dtype": "float32",
        "stain_views": 2,
    }
    views = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 2.0)], axis=1).astype(np.float32)
    path = write_bag(
        tmp_path / "s.h5", np.zeros((2, 2), np.float32), tiles, encoder, {"stain_views": views}
    )
    record = BagRecord("s", path, 0, 2, False)
    seen = {
        float(BagDataset([record], 2, stain_views=True, seed=i)[0].features[0, 0])
        for i in range(12)
    }
    assert seen == {0.0, 1.0, 2.0}
    assert {float(BagDataset([record], 2, seed=i)[0].features[0, 0]) for i in range(5)} == {0.0}
