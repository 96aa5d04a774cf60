"""``wsi-mil tile`` and ``wsi-mil info``: batches, failures.csv, resume, mpp overrides."""

from __future__ import annotations

import csv
import json
import shutil

import h5py
import pytest

from tiling.pipeline import tiling_outputs
from tiling.tiles_file import read_tiles_file
from wsi_mil.cli import main
from wsi_mil.synthetic.pyramid_tiff import Rect, shapes_render, write_pyramidal_tiff


def failures(out):
    with open(out / "failures.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    for name, rect in [("a", Rect(256, 256, 1792, 1792)), ("b", Rect(0, 0, 1024, 2048))]:
        write_pyramidal_tiff(folder / f"{name}.tif", 2048, 2048, 0.5, shapes_render([rect]))
    return folder


def test_resume_skips_complete_and_redoes_leftover_tmp(two_slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["tile", str(two_slides), "--out", str(out), "--min-tissue", "0.5"]) == 0
    assert "2 done" in capsys.readouterr().out
    a, b = tiling_outputs(out, "a"), tiling_outputs(out, "b")
    assert len(read_tiles_file(a.tiles)) == 36 and len(read_tiles_file(b.tiles)) == 32
    assert read_tiles_file(a.tiles).attrs["min_tissue"] == 0.5
    mtime_b = b.tiles.stat().st_mtime_ns
    # a killed run: slide a's tiles file never got past .tmp
    a.tiles.rename(a.tiles.with_name("a.h5.tmp"))
    assert main(["tile", str(two_slides), "--out", str(out)]) == 0
    assert "1 done, 1 skipped" in capsys.readouterr().out
    assert a.tiles.is_file() and not a.tiles.with_name("a.h5.tmp").exists()
    assert b.tiles.stat().st_mtime_ns == mtime_b
    assert not (out / "failures.csv").exists()
    assert main(["tile", str(two_slides), "--out", str(out), "--overwrite"]) == 0
    assert "2 done" in capsys.readouterr().out


def test_real_batch_carries_on_past_bad_slides(shared_data, tmp_path, capsys):
    slides = shared_data / "slides"
    out = tmp_path / "out"
    names = ["CMU-1-Small-Region.svs", "nonconformant-dicom.dcm", "TCGA-CR-7395-01A-01-TS1.svs"]
    for name in names:
        if not (slides / name).exists():
            pytest.skip(f"{slides / name} not present")
    inputs = [str(slides / n) for n in names]
    assert main(["tile", *inputs, "--out", str(out)]) == 1
    rows = {row["slide"].rsplit("/", 1)[-1]: row for row in failures(out)}
    assert set(rows) == {"nonconformant-dicom.dcm", "TCGA-CR-7395-01A-01-TS1.svs"}
    assert "image flavor" in rows["nonconformant-dicom.dcm"]["error"]
    assert "--mpp" in rows["TCGA-CR-7395-01A-01-TS1.svs"]["error"]
    assert all(row["stage"] == "tile" for row in rows.values())
    assert tiling_outputs(out, "CMU-1-Small-Region").complete()
    # the CSV override tiles TCGA; the DICOM still fails
    mpp_csv = tmp_path / "mpp.csv"
    mpp_csv.write_text("slide_id,mpp\nTCGA-CR-7395-01A-01-TS1,0.5\n")
    assert main(["tile", *inputs, "--out", str(out), "--mpp-csv", str(mpp_csv)]) == 1
    assert [row["slide"].rsplit("/", 1)[-1] for row in failures(out)] == ["nonconformant-dicom.dcm"]
    with h5py.File(tiling_outputs(out, "TCGA-CR-7395-01A-01-TS1").tiles) as f:
        assert f.attrs["mpp_source"] == "override"
    assert "1 done, 1 skipped" in capsys.readouterr().out


def test_workers_and_mpp_option(two_slides, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "tile",
                str(two_slides),
                "--out",
                str(out),
                "--mpp",
                "0.25",
                "--workers",
                "2",
                "--target-mpp",
                "1.0",
                "--tile-size",
                "128",
                "--pen-filter",
                "--tissue-method",
                "fixed",
                "--saturation-threshold",
                "12",
            ]
        )
        == 0
    )
    attrs = read_tiles_file(tiling_outputs(out, "a").tiles).attrs
    assert (attrs["slide_mpp"], attrs["mpp_source"], attrs["tile_size_level0"]) == (
        0.25,
        "override",
        512.0,
    )
    assert attrs["tissue_params"]["pen_filter"] is True
    assert attrs["tissue_method"] == "hsv-saturation-fixed"


def test_bad_inputs_exit_2(tmp_path, two_slides, capsys):
    assert main(["tile", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("slide_id,mpp\na,zero\n")
    assert (
        main(["tile", str(two_slides), "--out", str(tmp_path / "o"), "--mpp-csv", str(bad_csv)])
        == 2
    )
    assert "line 2" in capsys.readouterr().err
    assert main(["tile", str(two_slides), "--out", str(tmp_path / "o"), "--overlap", "1"]) == 2


def test_a_folder_without_slides_is_an_error_that_points_to_subfolders(
    two_slides, tmp_path, capsys
):
    """No slide found is a mistake in the inputs (exit 2, nothing written), not "0 done"; when
    the slides lie one level down the error says to add --recursive."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["tile", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{empty}: no slides found" in err and "--recursive" not in err
    parent = tmp_path / "cohort"
    shutil.copytree(two_slides, parent / "images")
    assert main(["tile", str(parent), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no slides found; 2 in subfolders" in err and "add --recursive" in err
    assert not (tmp_path / "o").exists()
    assert main(["tile", str(parent), "--recursive", "--out", str(tmp_path / "o")]) == 0
    assert len(list((tmp_path / "o" / "tiles").glob("*.h5"))) == 2


def test_duplicate_slide_ids_refused(two_slides, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(two_slides / "a.tif", other / "a.tif")
    assert main(["tile", str(two_slides), str(other), "--out", str(tmp_path / "o")]) == 2
    assert "'a'" in capsys.readouterr().err


def test_info(shared_slide, capsys):
    cmu = shared_slide("CMU-1-Small-Region.svs")
    assert main(["info", str(cmu)]) == 0
    text = capsys.readouterr().out
    assert "aperio" in text and "0.499 µm/px (metadata)" in text and "label (387 x 463)" in text
    tcga = shared_slide("TCGA-CR-7395-01A-01-TS1.svs")
    assert main(["info", "--json", str(tcga)]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["mpp"] is None and "--mpp" in info["mpp_problem"]
    assert [level["downsample"] for level in info["levels"]] == pytest.approx(
        [1.0, 2.0005], abs=1e-4
    )
    assert main(["info", str(shared_slide("nonconformant-dicom.dcm"))]) == 1
    assert "image flavor" in capsys.readouterr().err
