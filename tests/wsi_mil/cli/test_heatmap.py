"""``wsi-mil heatmap``: a batch over a predictions folder, with failures and resume."""

from __future__ import annotations

import argparse
import csv

import pytest

from wsi_mil.cli import heatmap as cli


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["heatmap", *argv])


def test_batch_renders_good_slides_records_bad_ones_and_resumes(
    tmp_path, lesion, lesion_slide, capsys
):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    lesion.write_predictions(predictions, lesion_slide)
    (predictions / "broken.h5").write_bytes(b"not hdf5")
    out = tmp_path / "heatmaps"
    argv = [
        "--predictions",
        str(predictions),
        "--heatmaps",
        str(out),
        "--slides",
        str(lesion_slide.parent),
        "--formats",
        "png,geojson",
        "--max-side",
        "400",
        "--topk",
        "2",
        "--normalize",
        "minmax",
        "--smooth-um",
        "50",
        "--cmap",
        "magma",
    ]
    args = parse(argv)
    assert args.func(args) == 1
    assert "1 done, 0 skipped (complete), 1 failed" in capsys.readouterr().out
    assert (out / "lesion" / "overlay.png").is_file()
    assert (out / "lesion" / "tiles.geojson").is_file()
    assert not (out / "lesion" / "heatmap.zarr").exists()
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["slide"], r["stage"]) for r in rows] == [("broken", "heatmap")]
    assert "broken.h5" in rows[0]["error"]
    # a re-run skips the complete slide and retries the broken one
    (predictions / "broken.h5").unlink()
    args = parse(argv)
    assert args.func(args) == 0
    assert "0 done, 1 skipped (complete), 0 failed" in capsys.readouterr().out
    assert not (out / "failures.csv").exists()


def test_missing_slide_in_slides_folder_fails_that_slide(tmp_path, lesion, lesion_slide, capsys):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    lesion.write_predictions(predictions, lesion_slide, slide_id="elsewhere")
    args = parse(
        [
            "--predictions",
            str(predictions),
            "--heatmaps",
            str(tmp_path / "o"),
            "--slides",
            str(lesion_slide.parent),
        ]
    )
    assert args.func(args) == 1
    assert "no slide with id 'elsewhere'" in (tmp_path / "o" / "failures.csv").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--formats", "png,tiff"], "formats"),
        (["--alpha", "2"], "alpha"),
    ],
)
def test_bad_options_give_one_clear_line(tmp_path, argv, message, capsys):
    from wsi_mil.cli import main

    assert (
        main(["heatmap", "--predictions", str(tmp_path), "--heatmaps", str(tmp_path / "o"), *argv])
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
