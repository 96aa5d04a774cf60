"""One owner per HDF5 file contract: only the owning modules open ``.h5`` files.

Each contract (docs/formats.md, "The HDF5 contracts") has one module that writes and reads it;
every other module, script included, goes through that module's functions. The tests of each
contract against its documented table sit beside the contract's own tests
(``file_contract`` fixture in ``tests/conftest.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The formats page's heading of each contract -> the module that writes and reads it.
OWNERS = {
    "tiles/<slide_id>.h5": "tiling/tiles_file.py",
    "features/<encoder>/<slide_id>.h5": "features/bag.py",
    "predictions/<slide_id>.h5": "wsi_mil/mil/predictions.py",
    "explain/<slide_id>/explanations.h5": "wsi_mil/explain/store.py",
    "TRIDENT copies": "features/trident.py",
}
#: Imports h5py without opening a file: the attribute codec the owners share (string arrays).
CODEC = "tiling/storage.py"
PACKAGES = ("tiling", "features", "wsi_mil", "scripts")


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def _h5py_use(tree: ast.AST) -> tuple[bool, list[int]]:
    """(imports h5py, lines that call ``h5py.File`` or an imported ``File``)."""
    imports, calls = False, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports |= any(a.name.split(".")[0] == "h5py" for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports |= (node.module or "").split(".")[0] == "h5py"
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "File"
                and isinstance(func.value, ast.Name)
                and func.value.id == "h5py"
            ) or (isinstance(func, ast.Name) and func.id == "File"):
                calls.append(node.lineno)
    return imports, calls


def test_only_the_owners_open_hdf5_files():
    owners = set(OWNERS.values())
    opened, imported = {}, []
    for path in _modules():
        rel = path.relative_to(REPO).as_posix()
        imports, calls = _h5py_use(ast.parse(path.read_text(encoding="utf-8")))
        if calls:
            opened[rel] = calls
        if imports and rel not in owners | {CODEC}:
            imported.append(rel)
    assert not imported, f"modules importing h5py outside the contract owners: {imported}"
    assert set(opened) <= owners, {k: v for k, v in opened.items() if k not in owners}
    assert set(opened) == owners  # each owner does open its files (the list is not stale)


def test_the_scan_finds_what_it_looks_for():
    found = _h5py_use(ast.parse("import h5py\nwith h5py.File(p) as f:\n    pass\n"))
    assert found == (True, [2])
    assert _h5py_use(ast.parse("from h5py import File\nFile(p)\n")) == (True, [2])
    assert _h5py_use(ast.parse("def f(x: h5py.File) -> None: ...\n")) == (False, [])


def test_the_formats_page_names_each_contracts_owner():
    page = (REPO / "docs" / "formats.md").read_text(encoding="utf-8")
    sections = page.split("\n### ")[1:]
    for heading, owner in OWNERS.items():
        section = next((s for s in sections if heading in s.splitlines()[0]), None)
        assert section is not None, f"docs/formats.md has no section for {heading}"
        module = owner.removesuffix(".py").replace("/", ".")
        assert f"`{module}." in section.replace("\n", " "), (heading, module)
