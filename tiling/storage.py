"""Atomic, self-describing output files shared by every stage.

Every file a stage writes is first written as ``NAME.tmp`` and then moved into place with
``os.replace``, so a file (or zarr directory) at its final name is always complete: a run killed
half-way leaves only a ``.tmp`` that the next run deletes and redoes. HDF5 attributes are kept
self-describing; values HDF5 cannot hold natively (None, dicts, nested lists) are stored as JSON.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import h5py
import numpy as np

JSON_PREFIX = "json:"


def tmp_path_for(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before it is moved into place."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success move it to ``path`` in one step.

    Works for files and directories (zarr stores). A leftover ``.tmp`` from a killed run is
    removed first; on error the partial output is removed and the final name is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and path.exists():
        _remove(path)
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (CSV, JSON, YAML, GeoJSON) atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def wsi_mil_version() -> str:
    try:
        return version("wsi-mil")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def provenance() -> dict[str, str]:
    """Attributes every output carries: which wsi-mil wrote it, and when (UTC, ISO 8601)."""
    return {
        "wsi_mil_version": wsi_mil_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def encode_attr(value: Any) -> Any:
    """A value HDF5 can store: scalars, strings and flat numeric arrays as they are, else JSON."""
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return np.asarray(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        # a string array (e.g. class_names): what h5py, HDFView and other tools read as such
        return np.array([v.encode("utf-8") for v in value], dtype=h5py.string_dtype("utf-8"))
    return JSON_PREFIX + json.dumps(value)


def decode_attr(value: Any) -> Any:
    """Inverse of :func:`encode_attr`; NumPy scalars become Python scalars."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str) and value.startswith(JSON_PREFIX):
        return json.loads(value[len(JSON_PREFIX) :])
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.tolist()]
    return value


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text (header first, ``\\n`` line ends) of mapping rows; ``columns`` default to every
    key in the order first seen. The one CSV writer of the package's tables."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_attrs(h5obj: Any, attrs: Mapping[str, Any]) -> None:
    """Store a mapping as HDF5 attributes on a file, group or dataset."""
    for key, value in attrs.items():
        h5obj.attrs[key] = encode_attr(value)


def read_attrs(h5obj: Any) -> dict[str, Any]:
    """Read every HDF5 attribute of an object back into Python values."""
    return {key: decode_attr(value) for key, value in h5obj.attrs.items()}
