"""``wsi-mil extract`` on a generated slide, offline."""

import csv
import shutil
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest

from features.bag import is_complete_bag, read_bag_attrs
from tiling.tiles_file import write_tiles_file
from wsi_mil.cli import main
from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

SIZE, MPP = 1024, 0.5


def render(x: int, y: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[y : y + h, x : x + w]
    return np.stack(
        [
            40 + xx * 200 // SIZE,
            40 + yy * 200 // SIZE,
            np.where((xx // 32 + yy // 32) % 2, 200, 60),
        ],
        axis=-1,
    ).astype(np.uint8)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WSI_MIL_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def tiles_for(slide: Path, tiles_dir: Path, slide_id: str) -> Path:
    attrs = {
        "slide_path": str(slide),
        "slide_id": slide_id,
        "slide_width": SIZE,
        "slide_height": SIZE,
        "slide_mpp": MPP,
        "mpp_source": "metadata",
        "target_mpp": MPP,
        "tile_size": 256,
        "tile_size_level0": 256.0,
        "read_level": 0,
        "read_downsample": 1.0,
        "stride": 256.0,
        "min_tissue": 0.25,
        "tissue_method": "otsu",
        "tissue_params": {},
    }
    coords = [[0, 0], [256, 256], [512, 768]]
    return write_tiles_file(tiles_dir / f"{slide_id}.h5", coords, [1.0, 0.8, 0.5], attrs)


@pytest.fixture
def cohort(tmp_path):
    """Two slides tiled into one folder; slide ``b`` was then moved away."""
    slides = tmp_path / "slides"
    a = write_pyramidal_tiff(slides / "a.tiff", SIZE, SIZE, MPP, render, levels=2)
    b = shutil.copy(a, slides / "b.tiff")
    tiles = tmp_path / "tiles"
    tiles_for(a, tiles, "a")
    tiles_for(Path(b), tiles, "b")
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(b, moved / "b.tiff")
    return tiles, moved


def failures(out: Path) -> list[dict]:
    path = out / "failures.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_extract_records_failures_skips_complete_bags_and_finds_moved_slides(
    tmp_path, cohort, capsys
):
    tiles, moved = cohort
    out = tmp_path / "features"
    args = [
        "extract",
        "--tiles",
        str(tiles),
        "--features",
        str(out / "efficientnet_lite0"),
        "--tile-readers",
        "0",
    ]
    assert main(args) == 1
    assert is_complete_bag(out / "efficientnet_lite0" / "a.h5")
    assert not (out / "efficientnet_lite0" / "b.h5").exists()
    [row] = failures(out)
    assert row["slide"] == "b" and row["stage"] == "extract"
    assert "b.tiff not found" in row["error"] and "--slides" in row["error"]
    assert "1 done, 0 skipped (complete), 1 failed" in capsys.readouterr().out

    # the former spelling (until 0.1.0): --out is the folder of the encoders' folders
    former = ["extract", "--tiles", str(tiles), "--out", str(out), "--workers", "0"]
    assert main(former + ["--slides", str(moved)]) == 0
    printed = capsys.readouterr()
    assert "1 done, 1 skipped (complete), 0 failed" in printed.out
    assert (
        f"--out is deprecated and goes in the next release: use --features "
        f"{out / 'efficientnet_lite0'}" in printed.err
    )
    assert "--workers is deprecated and goes in the next release: use --tile-readers" in printed.err
    attrs = read_bag_attrs(out / "efficientnet_lite0" / "b.h5")
    assert attrs["encoder"] == "efficientnet_lite0" and attrs["num_tiles"] == 3
    assert failures(out) == []

    assert main(args + ["--slides", str(moved), "--overwrite", "--dtype", "float32"]) == 0
    assert "2 done" in capsys.readouterr().out
    assert read_bag_attrs(out / "efficientnet_lite0" / "a.h5")["dtype"] == "float32"


def test_extract_without_weights_offline_is_a_clear_error(tmp_path, cohort, capsys):
    tiles, _ = cohort
    code = main(
        [
            "extract",
            "--tiles",
            str(tiles),
            "--features",
            str(tmp_path / "f" / "uni"),
            "--encoder",
            "uni",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "hf-hub:MahmoodLab/UNI" in err and "--weights PATH" in err
    assert not (tmp_path / "f").exists()


def test_extract_with_no_tiles_files_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(["extract", "--tiles", str(tmp_path / "empty"), "--features", str(tmp_path / "f")])
        == 2
    )
    assert "no tiles files" in capsys.readouterr().err
