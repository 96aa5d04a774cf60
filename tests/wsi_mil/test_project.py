"""``wsi_mil.Project``: the one owner of the project folder's names (an AST walk checks that no
other module of the package joins a path with one of them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tiling.pipeline import tiling_outputs
from wsi_mil import project as layout
from wsi_mil.project import Project

REPO = Path(__file__).resolve().parents[2]

#: the layout's names (the values of wsi_mil.project's constants); a run folder has a
#: config.yaml of its own (mil.train writes it), so that name alone is not the project's
NAMES = {
    value for name, value in vars(layout).items() if name.isupper() and isinstance(value, str)
} - {layout.CONFIG_FILE}


def test_the_layout_on_disk(tmp_path):
    project = Project(tmp_path)
    assert project.tiles_dir == tmp_path / "tiles"
    assert project.features_dir("timm:vit_small/x") == tmp_path / "features" / "timm-vit_small-x"
    assert project.run_dir("abmil") == tmp_path / "runs" / "abmil"
    assert project.predictions_dir == tmp_path / "predictions"
    assert project.predictions_csv == tmp_path / "predictions.csv"
    assert project.heatmaps_dir == tmp_path / "heatmaps"
    assert project.explanations_dir == tmp_path / "explain"
    assert project.segment_dir == tmp_path / "segment"
    assert project.failures_csv == tmp_path / "failures.csv"
    # tiling writes the per-slide files itself; its folder must be the project's
    assert tiling_outputs(tmp_path, "s").tiles.parent == project.tiles_dir


def test_a_folder_given_elsewhere_replaces_only_that_folder(tmp_path):
    project = Project(tmp_path / "p", predictions=tmp_path / "elsewhere" / "preds")
    assert project.predictions_dir == tmp_path / "elsewhere" / "preds"
    assert project.predictions_csv == tmp_path / "elsewhere" / "predictions.csv"
    assert project.heatmaps_dir == tmp_path / "p" / "heatmaps"
    assert project != Project(tmp_path / "p") and Project.of(project) is project
    with pytest.raises(TypeError, match="unknown folder"):
        Project(tmp_path, heatmap=tmp_path)


def test_project_imports_no_torch():
    code = "import sys, wsi_mil; wsi_mil.Project('x'); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"


def _joins_with_layout_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every ``path / "<layout name>"`` (a path joined with a folder name)."""
    return [
        (node.lineno, node.right.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and isinstance(node.right, ast.Constant)
        and node.right.value in NAMES
    ]


def test_no_module_but_project_joins_a_layout_name():
    found = []
    for path in sorted((REPO / "wsi_mil").rglob("*.py")):
        if path.name == "project.py" and path.parent.name == "wsi_mil":
            continue
        for lineno, name in _joins_with_layout_names(ast.parse(path.read_text("utf-8"))):
            found.append(f"{path.relative_to(REPO)}:{lineno} joins {name!r}")
    assert not found, "use wsi_mil.project.Project instead:\n" + "\n".join(found)


def test_the_walk_finds_a_join():
    tree = ast.parse('root / "heatmaps" / slide\nname = "heatmaps"\n')
    assert _joins_with_layout_names(tree) == [(1, "heatmaps")]
