"""Bags: matching to labels, the errors for mismatched or broken bags, memory vs streaming."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from features.bag import add_tile_labels
from wsi_mil.mil.bags import (
    BagDataset,
    BagSetError,
    collate_bags,
    find_bags,
    grid_coords,
    match_bags,
    read_grid_coords,
)
from wsi_mil.mil.labels import read_labels
from wsi_mil.synthetic.bags import planted_bags, write_planted_bags


@pytest.fixture
def cohort(tmp_path):
    bags = planted_bags(6, (3, 9), 8, seed=0)
    features_dir, labels_csv = write_planted_bags(tmp_path, bags)
    return bags, features_dir, labels_csv


def test_match_and_load_in_memory_and_streamed(cohort):
    bags, features_dir, labels_csv = cohort
    bag_set = match_bags(features_dir, read_labels(labels_csv))
    assert bag_set.encoder == "planted" and bag_set.dim == 8 and not bag_set.skipped
    memory = BagDataset(bag_set.records, bag_set.dim, memory_gb=1.0)
    streamed = BagDataset(bag_set.records, bag_set.dim, memory_gb=0.0)
    assert memory.in_memory and not streamed.in_memory
    for i, bag in enumerate(bags):
        a, b = memory[i], streamed[i]
        assert a.features.dtype == torch.float16
        assert torch.equal(a.features, b.features)
        np.testing.assert_allclose(a.features.float().numpy(), bag.features, atol=1e-2)
        assert a.label == bag.label


def test_labelled_slide_without_bag_is_an_error(cohort):
    _, features_dir, labels_csv = cohort
    (features_dir / "slide_0003.h5").unlink()
    with pytest.raises(
        BagSetError,
        match=r"labels.csv: 1 labelled slide\(s\) have no bag.*"
        r"slide_0003",
    ):
        match_bags(features_dir, read_labels(labels_csv))


def test_bag_without_label_is_skipped_with_a_warning(cohort):
    _, features_dir, labels_csv = cohort
    lines = labels_csv.read_text().splitlines()
    labels_csv.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.warns(UserWarning, match="slide_0005"):
        bag_set = match_bags(features_dir, read_labels(labels_csv))
    assert bag_set.skipped == ("slide_0005",)
    assert "slide_0005" not in [r.slide_id for r in bag_set.records]


def test_bags_of_different_widths_are_an_error(tmp_path, cohort):
    _, features_dir, labels_csv = cohort
    other = write_planted_bags(tmp_path / "other", planted_bags(1, 4, 16, prefix="wide"))[0]
    (other / "wide_0000.h5").rename(features_dir / "slide_0002.h5")
    with pytest.raises(BagSetError, match="slide_0002.h5: encoder 'planted' with 16 features"):
        match_bags(features_dir, read_labels(labels_csv))


def test_nan_features_name_the_file(cohort):
    _, features_dir, labels_csv = cohort
    with h5py.File(features_dir / "slide_0001.h5", "a") as f:
        f["features"][1, 3] = np.nan
    bag_set = match_bags(features_dir, read_labels(labels_csv))
    for budget in (1.0, 0.0):  # loaded and streamed bags are both checked
        with pytest.raises(
            BagSetError,
            match=r"slide_0001.h5: 1 tile\(s\) with NaN/inf "
            r"features \(first at row 1\)",
        ):
            BagDataset(bag_set.records, bag_set.dim, memory_gb=budget)


def test_empty_bag_and_incomplete_bag_are_errors(cohort):
    _, features_dir, labels_csv = cohort
    with h5py.File(features_dir / "slide_0004.h5", "a") as f:
        del f["features"]
        f.create_dataset("features", shape=(0, 8), dtype=np.float16)
    with pytest.raises(BagSetError, match="slide_0004.h5: empty bag"):
        match_bags(features_dir, read_labels(labels_csv))
    with h5py.File(features_dir / "slide_0004.h5", "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(BagSetError, match="slide_0004.h5: not a complete"):
        match_bags(features_dir, read_labels(labels_csv))


def test_find_bags_hints_at_encoder_folders(cohort):
    _, features_dir, _ = cohort
    with pytest.raises(BagSetError, match="pass one of them"):
        find_bags(features_dir.parent)


def test_collate_pads_and_masks_with_tile_labels(cohort):
    bags, features_dir, labels_csv = cohort
    add_tile_labels(features_dir / "slide_0001.h5", bags[1].planted.astype(np.float32), "test")
    bag_set = match_bags(features_dir, read_labels(labels_csv))
    data = BagDataset(bag_set.records, bag_set.dim)
    batch = collate_bags([data[0], data[1]])
    n0, n1 = len(bags[0].planted), len(bags[1].planted)
    assert batch.features.shape == (2, max(n0, n1), 8)
    assert batch.mask.sum(1).tolist() == [n0, n1]
    assert torch.isnan(batch.tile_labels[0]).all()
    assert batch.tile_labels[1, :n1].tolist() == bags[1].planted.astype(float).tolist()
    assert (batch.features[~batch.mask] == 0).all()


def test_max_tiles_subsamples(cohort):
    _, features_dir, labels_csv = cohort
    bag_set = match_bags(features_dir, read_labels(labels_csv))
    data = BagDataset(bag_set.records, bag_set.dim, max_tiles=2)
    assert all(
        data[i].features.shape[0] == min(2, r.num_tiles) for i, r in enumerate(bag_set.records)
    )


def test_grid_coords_recover_lattice_indices_of_fractional_strides():
    stride = 336.5  # e.g. 448 level-0 px tiles with 25 % overlap, rounded to a half
    cells = np.array([[0, 0], [3, 1], [17, 250], [1000, 7]])
    corners = np.floor(cells * stride + 1e-9).astype(np.int64)  # as tiling.grid lays them
    grid = grid_coords(corners, stride)
    assert grid.dtype == np.float32
    np.testing.assert_array_equal(grid, cells)
    with pytest.raises(ValueError, match="positive"):
        grid_coords(corners, 0.0)


def test_with_coords_gives_grid_positions_in_memory_and_streamed(cohort):
    bags, features_dir, labels_csv = cohort
    bag_set = match_bags(features_dir, read_labels(labels_csv))
    plain = BagDataset(bag_set.records, bag_set.dim)
    assert plain[0].coords is None and collate_bags([plain[0], plain[1]]).coords is None
    for memory_gb in (1.0, 0.0):
        data = BagDataset(bag_set.records, bag_set.dim, memory_gb=memory_gb, with_coords=True)
        for i, bag in enumerate(bags):
            n = len(bag.planted)
            side = int(np.ceil(np.sqrt(n)))  # synthetic bags: row-major on a square, stride 224
            expected = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1)
            assert data[i].coords.dtype == torch.float32
            np.testing.assert_array_equal(data[i].coords.numpy(), expected)
    batch = collate_bags([data[0], data[1]]).to("cpu")
    n0, n1 = (len(b.planted) for b in bags[:2])
    assert batch.coords.shape == (2, max(n0, n1), 2)
    assert torch.equal(batch.coords[0, :n0], data[0].coords)
    assert torch.equal(batch.coords[1, :n1], data[1].coords)
    assert (batch.coords[~batch.mask] == 0).all()
    with pytest.raises(BagSetError, match="have no coordinates"):
        collate_bags([data[0], plain[1]])


def test_subsampled_tiles_keep_their_coords(cohort):
    _, features_dir, labels_csv = cohort
    bag_set = match_bags(features_dir, read_labels(labels_csv))
    full = BagDataset(bag_set.records, bag_set.dim, with_coords=True)
    sampled = BagDataset(bag_set.records, bag_set.dim, max_tiles=2, with_coords=True, seed=3)
    for i, record in enumerate(bag_set.records):
        item, whole = sampled[i], full[i]
        assert item.coords.shape == (min(2, record.num_tiles), 2)
        for row, position in zip(item.features, item.coords):
            j = int(np.flatnonzero((whole.features == row).all(dim=1).numpy())[0])
            assert torch.equal(position, whole.coords[j])


def test_from_arrays_coords_and_missing_stride(cohort):
    bags, features_dir, _ = cohort
    arrays = [b.features for b in bags[:2]]
    coords = [np.zeros((len(a), 2)) for a in arrays]
    data = BagDataset.from_arrays(arrays, [0, 1], coords=coords)
    assert data[1].coords.shape == (len(arrays[1]), 2)
    with pytest.raises(BagSetError, match="coords of shape"):
        BagDataset.from_arrays(arrays, [0, 1], coords=[coords[0], coords[0][:1]])
    path = features_dir / "slide_0002.h5"
    with h5py.File(path, "a") as f:
        del f.attrs["stride"]
    with pytest.raises(BagSetError, match="slide_0002.h5: no 'stride' attribute"):
        read_grid_coords(path)
