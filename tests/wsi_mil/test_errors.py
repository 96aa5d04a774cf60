"""One base class for user errors: every exception class the package defines derives from it,
the command line prints those as one line, and shows the traceback of anything else."""

from __future__ import annotations

import ast
import builtins
import importlib
import subprocess
import sys
from pathlib import Path

from wsi_mil.cli import TRACEBACK_ENV, main
from wsi_mil.errors import WsiMilError

REPO = Path(__file__).resolve().parents[2]

#: built-in exception classes by name (``ValueError``, ``OSError``, ...), warnings left out
BUILTIN_ERRORS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, Exception) and not issubclass(value, Warning)
}


def exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every class in the packages with an exception class among its bases:
    a built-in error, or a name ending in ``Error`` (a subclass of one of ours)."""
    found = []
    for package in ("tiling", "features", "wsi_mil"):
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = {
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                }
                if bases & BUILTIN_ERRORS or any(b.endswith("Error") for b in bases):
                    found.append((module, node.name))
    return found


def test_the_walk_finds_the_known_errors():
    names = {cls for _, cls in exception_classes()}
    assert {"SlideOpenError", "ConfigError", "OptionError", "WeightsError"} <= names


def test_every_exception_class_derives_from_the_base():
    classes = exception_classes()
    not_ours = [
        f"{module}.{name}"
        for module, name in classes
        if not issubclass(getattr(importlib.import_module(module), name), WsiMilError)
    ]
    assert not not_ours, f"user-facing errors not derived from WsiMilError: {not_ours}"


def test_user_errors_keep_their_builtin_base():
    from tiling.slide import SlideOpenError
    from wsi_mil.config.schema import ConfigError

    assert issubclass(SlideOpenError, OSError) and issubclass(ConfigError, ValueError)


def test_a_user_error_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == f"wsi-mil run: error: {tmp_path / 'missing.yaml'}: config file not found"


def test_traceback_flag_shows_the_traceback_of_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    assert main(["--traceback", "run", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.rstrip().endswith("config file not found")


def test_traceback_flag_after_the_verb_works_too(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    assert main(["run", str(tmp_path / "missing.yaml"), "--traceback"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_environment_variable_shows_the_traceback_too(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_an_unexpected_error_shows_its_traceback():
    """A torch/CUDA failure is a RuntimeError: it is not the user's input, so the command shows
    where it happened instead of one line that hides it."""
    code = (
        "import sys\nimport wsi_mil.cli.info as info\n"
        "def boom(args):\n    raise RuntimeError('CUDA error: device-side assert triggered')\n"
        "info.run = boom\nfrom wsi_mil.cli import main\nsys.exit(main(['info', 'x.svs']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "in boom" in done.stderr
    assert done.stderr.rstrip().endswith("RuntimeError: CUDA error: device-side assert triggered")
