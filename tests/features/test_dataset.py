import pickle

import numpy as np
import openslide
import pytest
import torch

from features.dataset import TileDataset, tile_loader
from tiling.reader import TileReader, resize_rgb


def test_tiles_are_read_at_the_recorded_level_and_resized_to_the_encoder_input(
    make_tiles, generated_slide, slide_render
):
    tiles = make_tiles(coords=[[448, 224]])
    dataset = TileDataset(tiles, generated_slide, input_size=112)
    tile = dataset[0]
    assert tile.dtype == torch.uint8 and tile.shape == (112, 112, 3)
    # level 1 halves level 0: the 448-px level-0 square, shrunk to 112 px, is the render's
    expected = resize_rgb(slide_render(448, 224, 448, 448), 112)
    # JPEG tiles and a pyramid level built by box filtering: close, not bit-exact
    assert np.abs(tile.numpy().astype(int) - expected.astype(int)).mean() < 4


def test_batch_read_equals_single_reads_in_order(make_tiles, generated_slide):
    tiles = make_tiles()
    dataset = TileDataset(tiles, generated_slide, input_size=224)
    batch = dataset.__getitems__([3, 0, 7])
    assert batch.shape == (3, 224, 224, 3)
    for row, index in enumerate([3, 0, 7]):
        assert torch.equal(batch[row], dataset[index])


def test_dataset_pickles_without_its_slide_handle(make_tiles, generated_slide):
    """Spawned DataLoader workers receive a pickled dataset and open their own handle."""
    dataset = TileDataset(make_tiles(), generated_slide, input_size=224)
    first = dataset[0]
    assert dataset._reader is not None
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._reader is None
    assert torch.equal(clone[0], first)


def test_loader_keeps_order_with_workers(make_tiles, generated_slide, device):
    """In order from two workers, for the test device (whose batches are pinned on CUDA)."""
    tiles = make_tiles()
    dataset = TileDataset(tiles, generated_slide, input_size=224)
    batches = list(tile_loader(dataset, batch_size=4, workers=2, device=torch.device(device)))
    assert all(b.is_pinned() == (torch.device(device).type == "cuda") for b in batches)
    assert [len(b) for b in batches] == [4, 4, 4, 3]
    slide = openslide.open_slide(str(generated_slide))
    reader = TileReader(slide, tiles.attrs)
    for i, (x, y) in enumerate(tiles.coords):
        assert torch.equal(
            batches[i // 4][i % 4], torch.from_numpy(resize_rgb(reader.read(x, y), 224))
        )


def test_missing_slide_is_named(make_tiles, tmp_path):
    dataset = TileDataset(make_tiles(), tmp_path / "gone.svs", input_size=224)
    with pytest.raises(OSError, match="gone.svs: slide not found"):
        dataset[0]
