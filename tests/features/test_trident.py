"""TRIDENT's feature files read as bags: the same features train and predict identically in
either layout, slides complete what TRIDENT does not record, and our bags export to its layout.

The TRIDENT files here are written the way TRIDENT's ``save_h5`` writes them (datasets chunked
one row at a time and resizable, attributes on the datasets, none on the file), independently
of :mod:`features.trident`'s own writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from features.bag import (
    export_trident,
    is_complete_bag,
    read_bag_attrs,
    read_bag_coords,
    read_bag_features,
)


def write_like_trident(
    path: Path, features: np.ndarray, coords: np.ndarray, coords_attrs: dict
) -> Path:
    """TRIDENT's IO.save_h5(assets={features, coords}, attributes={features: {name,
    savetodir}, coords: coords_attrs})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    attributes = {
        "features": {"name": path.stem, "savetodir": str(path.parent)},
        "coords": coords_attrs,
    }
    with h5py.File(path, "w") as f:
        for key, value in (("features", features), ("coords", coords)):
            dset = f.create_dataset(
                key,
                shape=value.shape,
                maxshape=(None,) + value.shape[1:],
                chunks=(1,) + value.shape[1:],
                dtype=value.dtype,
            )
            dset[:] = value
            for name, attr in attributes[key].items():
                dset.attrs[name] = json.dumps(attr) if isinstance(attr, dict) else attr
    return path


def trident_copy_of(our_dir: Path, trident_dir: Path) -> Path:
    """Each of our bags rewritten as TRIDENT would have written the same features (20x, 224
    px patches, no overlap, level 0 at 40x)."""
    for bag in sorted(our_dir.glob("*.h5")):
        attrs = {
            "patch_size": 224,
            "patch_size_level0": 448,
            "level0_magnification": 40,
            "target_magnification": 20,
            "overlap": 0,
            "name": bag.stem,
            "savetodir": str(trident_dir),
        }
        write_like_trident(
            trident_dir / bag.name,
            read_bag_features(bag).astype(np.float32),
            read_bag_coords(bag).astype(np.int64),
            attrs,
        )
    return trident_dir


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory):
    from wsi_mil.synthetic.bags import planted_bags, write_planted_bags

    root = tmp_path_factory.mktemp("layouts")
    bags = planted_bags(12, (5, 30), 8, shift=4.0, seed=5)
    ours, labels = write_planted_bags(root / "ours", bags, dtype=np.float32)
    theirs = trident_copy_of(ours, root / "job" / "20x_224px_0px_overlap" / "features_planted")
    return ours, theirs, labels


def test_a_trident_file_reads_as_a_bag(two_layouts):
    ours, theirs, _ = two_layouts
    path = next(theirs.glob("*.h5"))
    assert is_complete_bag(path)
    attrs = read_bag_attrs(path)
    assert attrs["bag_format"] == "trident" and attrs["encoder"] == "planted"
    assert attrs["tile_size"] == 224 and attrs["tile_size_level0"] == 448
    assert attrs["stride"] == 448  # no overlap: one patch every 448 level-0 px
    assert attrs["slide_id"] == path.stem and attrs["num_tiles"] == len(read_bag_coords(path))
    np.testing.assert_array_equal(read_bag_features(path), read_bag_features(ours / path.name))


def test_overlap_sets_the_stride(tmp_path):
    path = write_like_trident(
        tmp_path / "features_uni_v1" / "s.h5",
        np.zeros((2, 4), np.float32),
        np.array([[0, 0], [256, 0]]),
        {
            "patch_size": 256,
            "patch_size_level0": 512,
            "overlap": 128,
            "level0_magnification": 40,
            "target_magnification": 20,
        },
    )
    attrs = read_bag_attrs(path)
    assert attrs["stride"] == 256 and attrs["encoder"] == "uni_v1"


def test_trident_layout_trains_and_predicts_identically(two_layouts, tmp_path):
    """The same features in TRIDENT's layout and in ours: the same run, the same predictions."""
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.predict import load_run, predict_bag
    from wsi_mil.mil.train import train_folds

    ours, theirs, labels = two_layouts
    params = TrainParams(
        folds=2,
        epochs=2,
        min_epochs=1,
        hidden_dims=(16,),
        attention_dim=8,
        bootstrap=0,
        device="cpu",
        seed=3,
    )
    summaries = {
        name: train_folds(folder, labels, tmp_path / name, params)
        for name, folder in (("ours", ours), ("trident", theirs))
    }
    for key in ("auc", "balanced_accuracy"):
        assert summaries["ours"][key]["mean"] == summaries["trident"][key]["mean"]
    for bag in sorted(ours.glob("*.h5"))[:4]:
        a = predict_bag(load_run(tmp_path / "ours", device="cpu"), bag)
        b = predict_bag(load_run(tmp_path / "trident", device="cpu"), theirs / bag.name)
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.attention, b.attention)
        np.testing.assert_array_equal(a.coords, b.coords)


def test_a_slide_completes_what_trident_does_not_record(tmp_path, generated_slide):
    """The generated slide (1536 x 1024 px, 0.25 µm/px): size, µm/px and the level to read."""
    path = write_like_trident(
        tmp_path / "features_x" / "gradient.h5",
        np.ones((2, 4), np.float32),
        np.array([[0, 0], [448, 0]]),
        {
            "patch_size": 224,
            "patch_size_level0": 448,
            "overlap": 0,
            "level0_magnification": 40,
            "target_magnification": 20,
        },
    )
    attrs = read_bag_attrs(path, slide_path=generated_slide)
    assert (attrs["slide_width"], attrs["slide_height"]) == (1536, 1024)
    assert attrs["slide_mpp"] == pytest.approx(0.25) and attrs["target_mpp"] == pytest.approx(0.5)
    assert attrs["read_level"] == 1 and attrs["read_downsample"] == pytest.approx(2.0)
    from tiling.lattice import SlideGeometry

    assert SlideGeometry.from_attrs(attrs).stride_level0 == 448


def test_our_bag_exports_to_trident_layout(tmp_path, make_tiles):
    """What TRIDENT's readers (IO.read_coords, f['features']) find in an exported bag."""
    from features.bag import write_bag

    tiles = make_tiles()
    encoder = {
        "encoder": "toy",
        "encoder_dim": 3,
        "weights": "none",
        "weights_sha256": "0" * 64,
        "input_size": 224,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "dtype": "float32",
    }
    features = np.random.default_rng(0).normal(size=(len(tiles), 3)).astype(np.float32)
    bag = write_bag(tmp_path / "out" / "toy" / "gradient.h5", features, tiles, encoder)
    copy = export_trident(bag)
    assert (
        copy
        == tmp_path / "out" / "trident" / "20x_224px_112px_overlap" / "features_toy" / "gradient.h5"
    )
    with h5py.File(copy) as f:
        coords_attrs = dict(f["coords"].attrs)
        np.testing.assert_array_equal(f["features"][:], features)
        np.testing.assert_array_equal(f["coords"][:], tiles.coords)
        assert f["features"].chunks == (1, 3) and f["features"].maxshape == (None, 3)
    assert coords_attrs["patch_size"] == 224 and coords_attrs["patch_size_level0"] == 448
    assert coords_attrs["level0_magnification"] == 40
    assert coords_attrs["target_magnification"] == 20 and coords_attrs["overlap"] == 112
    back = read_bag_attrs(copy)  # and it reads back as a bag, with its encoder
    assert back["encoder"] == "toy" and back["stride"] == tiles.attrs["stride"]
