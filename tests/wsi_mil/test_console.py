"""The library's messages go through :mod:`logging`: a notebook routes or silences them, and the
command shows them as plain lines (INFO on stdout, warnings on stderr)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest

from wsi_mil import console
from wsi_mil.cli import main


@pytest.fixture
def slides(tmp_path, lesion_slide):
    """A good slide and a broken one: one INFO line (its tissue) and one warning (the failure)."""
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(lesion_slide, folder / "lesion.tiff")
    (folder / "broken.tiff").write_bytes(b"not a slide")
    return folder


def test_a_notebook_routes_a_stage_s_messages(slides, tmp_path, caplog):
    from wsi_mil import tile_slides

    caplog.set_level(logging.INFO, logger="wsi_mil")
    result = tile_slides([slides], out=tmp_path / "out")
    assert result.done == [str(slides / "lesion.tiff")]
    by_level = {(r.name, r.levelno, r.getMessage().split(":")[0]) for r in caplog.records}
    assert ("wsi_mil.pipeline.tile", logging.INFO, "lesion") in by_level
    assert any(
        r.name == "wsi_mil.pipeline.batch"
        and r.levelno == logging.WARNING
        and "broken.tiff failed" in r.getMessage()
        for r in caplog.records
    )


def test_a_notebook_silences_the_library_but_its_warnings(slides, tmp_path, caplog):
    from wsi_mil import tile_slides

    caplog.set_level(logging.INFO)
    logger = logging.getLogger("wsi_mil")
    level = logger.level
    logger.setLevel(logging.WARNING)  # what the user writes
    try:
        tile_slides([slides], out=tmp_path / "out")
    finally:
        logger.setLevel(level)
    library = [r for r in caplog.records if r.name.startswith("wsi_mil")]
    assert library and all(r.levelno >= logging.WARNING for r in library)


def test_the_command_prints_the_messages_as_plain_lines(slides, tmp_path, capsys):
    assert main(["tile", str(slides), "--out", str(tmp_path / "out")]) == 1  # one failed
    out, err = capsys.readouterr()
    assert any(line.startswith("lesion: tissue ") for line in out.splitlines()), out
    assert any(
        line.startswith("[tile] ") and "broken.tiff failed: " in line for line in err.splitlines()
    ), err
    assert not console.installed()  # removed when the command returns


def test_install_is_idempotent_and_undone():
    logger = logging.getLogger("wsi_mil")
    before = (list(logger.handlers), logger.level)
    console.install()
    console.install()
    try:
        assert sum(isinstance(h, console.ConsoleHandler) for h in logger.handlers) == 1
        assert logger.getEffectiveLevel() == logging.INFO
    finally:
        console.uninstall()
    assert (list(logger.handlers), logger.level) == before


def test_progress_bars_follow_tqdm_disable_unless_hidden():
    """``TQDM_DISABLE=1`` hides every bar (the library never passes ``disable`` but to hide one,
    which would override the variable); ``show=False`` hides one bar whatever the variable.
    tqdm reads its variables when it is imported, hence a fresh interpreter per setting."""
    code = (
        "import io; from wsi_mil.console import progress_bar; "
        "print(progress_bar(total=1, file=io.StringIO()).disable, "
        "progress_bar(total=1, show=False).disable)"
    )

    def disabled(env: dict[str, str]) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
        run = subprocess.run(
            [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert disabled({}) == "False True"
    assert disabled({"TQDM_DISABLE": "1"}) == "True True"
