import h5py
import numpy as np
import pytest
import torch

from features.bag import (
    ENCODER_ATTRS,
    add_tile_labels,
    export_trident,
    is_complete_bag,
    read_bag_attrs,
)
from features.dataset import TileDataset
from features.extract import (
    EmptyTilesError,
    ExtractParams,
    SlideMismatchError,
    bag_is_current,
    extract_slide,
)
from features.registry import Encoder
from tiling.storage import tmp_path_for


@pytest.fixture
def quiet(device) -> dict:
    """Extraction settings of these tests: no progress bar, the test device
    (``WSI_MIL_TEST_DEVICE``), where the ``lite0`` fixture's encoder is too."""
    return {"progress": False, "device": device}


def read_features(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["features"][:]


def test_features_do_not_depend_on_workers_or_batch_size(
    tmp_path, make_tiles, generated_slide, lite0, quiet
):
    tiles = make_tiles()
    runs = {}
    for workers, batch_size in [(0, 32), (2, 32), (0, 1), (2, 1)]:
        params = ExtractParams(
            tile_readers=workers, batch_size=batch_size, dtype="float32", **quiet
        )
        out = extract_slide(
            tiles.path, generated_slide, tmp_path / f"w{workers}b{batch_size}.h5", lite0, params
        )
        runs[workers, batch_size] = read_features(out)
    reference = runs[0, 32]
    assert reference.shape == (len(tiles), 1280)
    assert np.abs(reference).max() > 0.1  # real activations, not zeros
    for features in runs.values():
        np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-4)


def random_lite0(device: str) -> Encoder:
    """EfficientNet-Lite0's architecture with seeded random weights on ``device``: the test
    device's extraction path needs no bundled weights (the GPU check's machine has none)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    return Encoder(
        name="random-lite0",
        model=model,
        dim=1280,
        input_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        weights="random init",
        weights_sha256="",
    ).to(device)


def test_extraction_on_the_test_device_matches_cpu_float32(
    tmp_path, make_tiles, generated_slide, quiet
):
    """The test device's path (two reader processes; on CUDA pinned memory, channels_last and
    bf16 autocast) gives the CPU's float32 features: each tile's vector within 5 % relative L2
    on CUDA (bf16 keeps 8 bits of mantissa: about 1 % was measured with CPU bf16 autocast on
    these random weights), within 1e-4 on the CPU."""
    tiles = make_tiles(coords=make_tiles().coords[:8], name="eight")
    reference = read_features(
        extract_slide(
            tiles.path,
            generated_slide,
            tmp_path / "cpu.h5",
            random_lite0("cpu"),
            ExtractParams(tile_readers=0, dtype="float32", progress=False, device="cpu"),
        )
    )
    on_device = read_features(
        extract_slide(
            tiles.path,
            generated_slide,
            tmp_path / "device.h5",
            random_lite0(quiet["device"]),
            ExtractParams(tile_readers=2, dtype="float32", **quiet),
        )
    )
    assert np.linalg.norm(reference, axis=1).min() > 1.0  # real activations, not zeros
    relative = np.linalg.norm(on_device - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert relative.max() < (1e-4 if quiet["device"] == "cpu" else 0.05), relative.max()


def test_row_i_is_the_tile_at_coords_i(tmp_path, make_tiles, generated_slide, lite0, quiet):
    tiles = make_tiles()
    forward = extract_slide(
        tiles.path,
        generated_slide,
        tmp_path / "fwd.h5",
        lite0,
        ExtractParams(dtype="float32", **quiet),
    )
    reversed_tiles = make_tiles(coords=tiles.coords[::-1], name="reversed")
    backward = extract_slide(
        reversed_tiles.path,
        generated_slide,
        tmp_path / "bwd.h5",
        lite0,
        ExtractParams(dtype="float32", **quiet),
    )
    f, b = read_features(forward), read_features(backward)
    np.testing.assert_allclose(b, f[::-1], rtol=1e-4, atol=1e-4)
    assert not np.allclose(f[0], f[-1], atol=1e-2)  # tiles differ, so the order is testable
    # and row 5 is the encoder applied to the tile at coords[5], read on its own
    tile = TileDataset(tiles, generated_slide, lite0.input_size)[5]
    np.testing.assert_allclose(
        f[5], lite0.encode(tile[None])[0].cpu().numpy(), rtol=1e-4, atol=1e-4
    )


def test_bag_follows_the_contract(tmp_path, make_tiles, generated_slide, lite0, quiet):
    tiles = make_tiles()
    out = extract_slide(
        tiles.path,
        generated_slide,
        tmp_path / "features" / "gradient.h5",
        lite0,
        ExtractParams(**quiet),
    )
    assert is_complete_bag(out)
    attrs = read_bag_attrs(out)
    for key, value in tiles.attrs.items():
        if key != "created":
            assert attrs[key] == value, key
    assert set(ENCODER_ATTRS) <= set(attrs)
    assert attrs["encoder"] == "efficientnet_lite0" and attrs["encoder_dim"] == 1280
    assert attrs["weights_sha256"] == lite0.weights_sha256 and attrs["dtype"] == "float16"
    assert list(attrs["mean"]) == [0.5] * 3 and attrs["input_size"] == 224
    with h5py.File(out, "r") as f:
        assert f["features"].dtype == np.float16 and f["features"].shape == (len(tiles), 1280)
        np.testing.assert_array_equal(f["coords"][:], tiles.coords)
        np.testing.assert_array_equal(f["tissue_fraction"][:], tiles.tissue_fraction)
        assert f.attrs["complete"]


@pytest.mark.slow
def test_bag_and_trident_copy_hold_exactly_what_the_docs_list(
    tmp_path, make_tiles, generated_slide, lite0, quiet, file_contract
):
    """docs/formats.md's feature-bag table is what ``wsi-mil extract`` (with tile QC, a stain
    view and lesion labels) writes on top of the tiles file's attributes, and its TRIDENT
    table is what ``--format trident`` writes."""
    tiles = make_tiles(make_tiles().coords[:6])  # a few tiles: the layout is the point
    out = extract_slide(
        tiles.path,
        generated_slide,
        tmp_path / "features" / "gradient.h5",
        lite0,
        ExtractParams(stain_views=1, **quiet),
    )
    add_tile_labels(out, np.zeros(len(tiles)), source="test")
    file_contract.check(
        out,
        "features/<encoder>/<slide_id>.h5",
        inherited={("attribute", key) for key in tiles.attrs},
        not_written={("attribute", "stain_target"), ("attribute", "stain_reference")},
    )  # --stain macenko
    file_contract.check(export_trident(out), "TRIDENT copies")
    always = {
        name
        for (kind, name), when in file_contract.documented(
            "features/<encoder>/<slide_id>.h5"
        ).items()
        if kind == "attribute" and when == "always"
    }
    assert set(ENCODER_ATTRS) <= always


def test_partial_tmp_from_a_killed_run_is_redone(
    tmp_path, make_tiles, generated_slide, lite0, quiet
):
    tiles = make_tiles()
    out = tmp_path / "gradient.h5"
    with h5py.File(tmp_path_for(out), "w") as f:  # what a run killed mid-write leaves
        f["features"] = np.zeros((2, 1280), np.float16)
    assert not is_complete_bag(out) and not bag_is_current(out, tiles.path, lite0, "float16")
    extract_slide(tiles.path, generated_slide, out, lite0, ExtractParams(**quiet))
    assert is_complete_bag(out) and not tmp_path_for(out).exists()
    assert read_features(out).shape == (len(tiles), 1280)
    assert bag_is_current(out, tiles.path, lite0, "float16")


def test_a_bag_is_outdated_by_new_tiles_other_weights_or_dtype(
    tmp_path, make_tiles, generated_slide, lite0, quiet
):
    tiles = make_tiles()
    out = extract_slide(
        tiles.path, generated_slide, tmp_path / "gradient.h5", lite0, ExtractParams(**quiet)
    )
    assert bag_is_current(out, tiles.path, lite0, "float16")
    assert not bag_is_current(out, tiles.path, lite0, "float32")
    retiled = make_tiles(coords=tiles.coords[:3], name="retiled")
    assert not bag_is_current(out, retiled.path, lite0, "float16")
    with h5py.File(out, "a") as f:
        f.attrs["weights_sha256"] = "0" * 64
    assert not bag_is_current(out, tiles.path, lite0, "float16")


def test_empty_tiles_file_is_an_error_naming_it(
    tmp_path, make_tiles, generated_slide, lite0, quiet
):
    empty = make_tiles(coords=np.zeros((0, 2)), name="empty")
    out = tmp_path / "empty.h5"
    with pytest.raises(EmptyTilesError, match=r"empty\.h5: the tiles file has no tiles"):
        extract_slide(empty.path, generated_slide, out, lite0, ExtractParams(**quiet))
    assert not out.exists()


def test_wrong_slide_is_refused(tmp_path, make_tiles, generated_slide, lite0, quiet):
    tiles = make_tiles(slide_width=4000)
    with pytest.raises(SlideMismatchError, match="1536x1024 px but .* 4000x1024 px"):
        extract_slide(tiles.path, generated_slide, tmp_path / "x.h5", lite0, ExtractParams(**quiet))


def test_params_are_validated():
    with pytest.raises(ValueError, match="dtype"):
        ExtractParams(dtype="bfloat16")
    with pytest.raises(ValueError, match="batch_size"):
        ExtractParams(batch_size=0)
    with pytest.raises(ValueError, match="tile_readers"):
        ExtractParams(tile_readers=-1)


def test_real_svs_slide_end_to_end(tmp_path, shared_slide, lite0, quiet):
    """A real Aperio slide (JPEG tiles, read at level 0) through read, encode and write."""
    from tiling.tiles_file import read_tiles_file, write_tiles_file

    slide = shared_slide("CMU-1-Small-Region.svs")
    size0 = 256 * 0.5 / 0.499
    coords = [[0, 0], [1000, 1200], [1800, 2500]]
    attrs = {
        "slide_path": str(slide),
        "slide_id": "CMU-1-Small-Region",
        "slide_width": 2220,
        "slide_height": 2967,
        "slide_mpp": 0.499,
        "mpp_source": "metadata",
        "target_mpp": 0.5,
        "tile_size": 256,
        "tile_size_level0": size0,
        "read_level": 0,
        "read_downsample": 1.0,
        "stride": size0,
        "min_tissue": 0.0,
        "tissue_method": "otsu",
        "tissue_params": {},
    }
    tiles = read_tiles_file(write_tiles_file(tmp_path / "cmu.h5", coords, [1, 1, 1], attrs))
    out = extract_slide(
        tiles.path, slide, tmp_path / "bag.h5", lite0, ExtractParams(tile_readers=1, **quiet)
    )
    features = read_features(out).astype(np.float32)
    assert features.shape == (3, 1280) and np.isfinite(features).all()
    assert torch.from_numpy(features).std(dim=0).mean() > 0.01
