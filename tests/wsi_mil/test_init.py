"""The public API: a literal ``__all__`` that tools can read, every name importable, a version,
and reading a config never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import wsi_mil

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "monai", "numpy", "scipy", "sklearn", "matplotlib")


def imported_heavy(code: str) -> list[str]:
    """Heavy modules in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return (
        [m for m in done.stdout.strip().splitlines()[-1].split(",") if m]
        if done.stdout.strip()
        else []
    )


def type_checking_imports() -> dict[str, str]:
    """name -> module of the ``if TYPE_CHECKING:`` imports in ``wsi_mil/__init__.py``."""
    tree = ast.parse((REPO / "wsi_mil" / "__init__.py").read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    return {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_all_is_the_lazy_api_plus_the_eager_names():
    assert set(wsi_mil.__all__) == set(wsi_mil._API) | {
        "__version__",
        "WsiMilError",
        "InputError",
        "MissingInputError",
    }
    assert len(wsi_mil.__all__) == len(set(wsi_mil.__all__))


def test_type_checkers_see_every_lazy_name_where_it_is_defined():
    assert type_checking_imports() == wsi_mil._API


@pytest.mark.slow
def test_every_public_name_imports():
    for name in wsi_mil.__all__:
        assert getattr(wsi_mil, name) is not None, name


def test_version_is_the_package_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        expected = version("wsi-mil")
    except PackageNotFoundError:
        expected = "0+unknown"
    assert wsi_mil.__version__ == expected


def test_import_and_load_config_import_no_torch():
    assert imported_heavy("import wsi_mil") == []
    assert imported_heavy("import wsi_mil\nwsi_mil.load_config('configs/default.yaml')") == []


def test_run_check_imports_no_torch():
    code = (
        "import contextlib, io\nfrom wsi_mil.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert main(['run', 'configs/default.yaml', '--check']) == 0"
    )
    assert imported_heavy(code) == []
