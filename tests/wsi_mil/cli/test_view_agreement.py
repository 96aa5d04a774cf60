"""``wsi-mil agreement`` on ratings files, and ``wsi-mil view``'s one-line errors."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from wsi_mil.cli import agreement as agreement_cli
from wsi_mil.cli import main
from wsi_mil.cli import view as view_cli
from wsi_mil.viewer.ratings import COLUMNS


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wsi-mil")
    module.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def write_ratings(folder: Path, rater: str, rows: dict[str, tuple[int, int, int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{rater}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for slide_id, scores in rows.items():
            writer.writerow([slide_id, rater, *scores, "", "2026-01-01T00:00:00+00:00"])


def test_agreement_two_raters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ratings = tmp_path / "project" / "ratings"
    a = [1, 2, 3, 4, 5]
    b = [1, 2, 3, 5, 5]
    write_ratings(
        ratings, "ann", {f"s{i}": (a[i], a[i], 3, a[i]) for i in range(5)} | {"extra": (1, 1, 1, 1)}
    )
    write_ratings(ratings, "bob", {f"s{i}": (b[i], a[i], 3, a[5 - 1 - i]) for i in range(5)})
    args = parse(agreement_cli, ["agreement", str(ratings)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "slides scored: ann 6, bob 5" in out
    table = list(csv.DictReader((tmp_path / "project" / "agreement.csv").open()))
    kappa = {row["question"]: row["kappa"] for row in table}
    assert float(kappa["match"]) == pytest.approx(22 / 23)
    assert float(kappa["understand"]) == pytest.approx(1.0)
    assert kappa["plausible"] == ""  # every score 3: kappa undefined, reported as n/a
    assert float(kappa["trust"]) == pytest.approx(-1.0)
    assert {row["n_common_slides"] for row in table} == {"5"}
    assert table[0]["n_slides_ann"] == "6" and table[0]["n_slides_bob"] == "5"
    assert "n/a" in out


def test_agreement_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["agreement", str(tmp_path / "missing")]) == 2
    assert "ratings folder not found" in capsys.readouterr().err
    write_ratings(tmp_path / "r", "solo", {"s": (1, 2, 3, 4)})
    assert main(["agreement", str(tmp_path / "r")]) == 2
    assert "at least 2 raters" in capsys.readouterr().err
    (tmp_path / "r" / "bad.csv").write_text("slide_id,match\ns,9\n")
    assert main(["agreement", str(tmp_path / "r")]) == 2
    assert "bad.csv: not a ratings file" in capsys.readouterr().err


def test_view_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["view", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "project folder not found" in err
    assert main(["view", str(tmp_path), "--rater", "../evil"]) == 2
    assert "rater name" in capsys.readouterr().err
    assert main(["view", str(tmp_path)]) == 2
    assert "no slides to show" in capsys.readouterr().err


def test_view_prints_url_and_warns_off_loopback(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    from werkzeug.serving import BaseWSGIServer

    project = tmp_path / "p"
    (project / "slides").mkdir(parents=True)
    (project / "slides" / "s1.tiff").write_bytes(b"not a slide")
    served = []

    def stop_at_once(self, *args, **kwargs):
        served.append(self.server_address)
        raise KeyboardInterrupt

    monkeypatch.setattr(BaseWSGIServer, "serve_forever", stop_at_once)
    args = parse(
        view_cli,
        [
            "view",
            str(project),
            "--slides",
            str(project / "slides"),
            "--port",
            "0",
            "--rater",
            "dr_x",
        ],
    )
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert served[0][0] == "127.0.0.1"
    assert "viewer at http://127.0.0.1:" in captured.out and "warning" not in captured.err
    assert "ratings of 'dr_x' go to" in captured.out
    args = parse(
        view_cli,
        [
            "view",
            str(project),
            "--slides",
            str(project / "slides"),
            "--port",
            "0",
            "--host",
            "0.0.0.0",
        ],
    )
    assert args.func(args) == 0
    assert "not on this machine only" in capsys.readouterr().err
