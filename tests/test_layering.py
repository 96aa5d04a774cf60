"""Imports run one way: no module imports a package of a higher layer (an AST walk, so a lazy
import inside a function counts too; ``if TYPE_CHECKING:`` blocks are type hints, not imports),
and docs/architecture.md lists exactly these layers in this order."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Lowest first. A module may import its own layer and any layer below it.
LAYERS = (
    "wsi_mil.errors",  # the base class of user errors: imports nothing, every layer uses it
    "wsi_mil.extras",  # the optional extras and the check that names a missing one
    "wsi_mil.console",  # the command's logging handler (tqdm only)
    # the dataclass schema and the executor settings: standard library only, every params.py
    # may use them
    "wsi_mil.config.schema",
    "wsi_mil.config.executor",
    "tiling",
    "features",
    "wsi_mil.project",  # the project folder's layout: every stage, the viewer and the CLI use it
    "wsi_mil.executors",  # how jobs run (process pool, Dask): per-slide stages and folds
    "wsi_mil.metrics",
    "wsi_mil.mil",
    "wsi_mil.synthetic",
    "wsi_mil.explain",
    "wsi_mil.heatmaps",
    "wsi_mil.export",
    "wsi_mil.segment",
    "wsi_mil.viewer",
    "wsi_mil.config",  # the run configuration: every stage's params in one schema
    "wsi_mil.pipeline",
    "wsi_mil.cli",
)


def layer_of(module: str) -> int | None:
    """The layer of ``module``: the longest entry of :data:`LAYERS` it is or lies inside."""
    matches = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return LAYERS.index(max(matches, key=len)) if matches else None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_layers_import_downwards_only():
    violations = []
    for package in ("tiling", "features", "wsi_mil"):
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            own = layer_of(module)
            if own is None:  # wsi_mil/__init__.py and __main__.py: the public entry points
                continue
            for lineno, target in imports(ast.parse(path.read_text(encoding="utf-8"))):
                other = layer_of(target)
                if other is not None and other > own:
                    violations.append(
                        f"{path.relative_to(REPO)}:{lineno} imports {target} "
                        f"({LAYERS[other]} is above {LAYERS[own]})"
                    )
    assert not violations, "\n".join(violations)


def test_the_walk_sees_lazy_imports_and_skips_type_checking_blocks():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import wsi_mil.cli\n"
        "def f():\n    from wsi_mil.pipeline import run\n"
    )
    assert [m for _, m in imports(tree)] == ["typing", "wsi_mil.pipeline"]


def _module_graph(top_level_only: bool) -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from a.b import c`` counts ``a.b.c`` when
    that is a module, else ``a.b``)."""
    modules = {}
    for package in ("tiling", "features", "wsi_mil"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in modules else node.module
                    if target in modules and target != name:
                        graph[name].add(target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_modules_at_import_time():
    """Module-level imports form no circle, inside a package or across."""
    assert _cycles(_module_graph(top_level_only=True)) == []


def test_no_import_circle_even_through_lazy_imports():
    """Imports inside functions form no circle either, inside a package or across: a lazy
    import that closes a circle hides a dependency that belongs one layer down."""
    assert _cycles(_module_graph(top_level_only=False)) == []


def test_the_graph_sees_a_lazy_circle_inside_a_package(tmp_path, monkeypatch):
    (tmp_path / "wsi_mil" / "pkg").mkdir(parents=True)
    (tmp_path / "tiling").mkdir()
    (tmp_path / "features").mkdir()
    (tmp_path / "wsi_mil" / "pkg" / "a.py").write_text("from wsi_mil.pkg import b\n")
    lazy = "def f():\n    from wsi_mil.pkg.a import x\n"
    (tmp_path / "wsi_mil" / "pkg" / "b.py").write_text(lazy)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _cycles(_module_graph(top_level_only=True)) == []
    assert _cycles(_module_graph(top_level_only=False)) == [["wsi_mil.pkg.a", "wsi_mil.pkg.b"]]


def test_the_circle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _module(cell: str) -> str:
    """`wsi_mil/config/schema.py` -> wsi_mil.config.schema; `tiling/` -> tiling."""
    path = cell.strip().strip("`").removesuffix("/").removesuffix(".py")
    return path.replace("/", ".")


def test_the_architecture_page_lists_the_layers_in_order():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| `", line)]
    assert [_module(row.split("|")[1]) for row in rows] == list(LAYERS)


def test_every_package_and_top_level_module_has_a_layer():
    missing = []
    for package in ("tiling", "features", "wsi_mil"):
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if module in ("wsi_mil.__init__", "wsi_mil.__main__"):
                continue
            if layer_of(module) is None:
                missing.append(module)
    assert not missing, missing
