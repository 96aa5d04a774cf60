"""The optional parts of wsi-mil and the one check that says which extra to install.

``pip install wsi-mil`` tiles, extracts features, trains, predicts and draws heatmaps; the
rest needs an extra (``pip install "wsi-mil[viewer]"``, ``"wsi-mil[all]"`` for everything).
The table below must match ``[project.optional-dependencies]`` in ``pyproject.toml``
(``tests/wsi_mil/test_extras.py`` checks it).

Code that needs an extra's package calls :func:`require_extra` right before importing it, inside
the function that needs it (never at module level), so a core install never imports it and a
missing package is one line naming the extra rather than a ``ModuleNotFoundError``. The check
asks the import system whether the top-level module can be found (``importlib.util.find_spec``)
without importing it; an installed package that then fails to import is broken, not missing, and
shows its traceback. This module imports only the standard library.
"""

from __future__ import annotations

import importlib.util

from wsi_mil.errors import WsiMilError

#: extra -> the top-level modules it provides (its packages' import names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "viewer": ("flask",),
    "cluster": ("dask", "distributed", "dask_jobqueue"),
    "segment": ("monai",),
    "explain": ("captum",),
    "transmil": ("nystrom_attention",),
    "agreement": ("statsmodels",),
    "survival": ("sksurv", "lifelines"),
}

#: the package that installs a module, where its name on PyPI is not the import name
PACKAGE_OF: dict[str, str] = {
    "distributed": "dask[distributed]",
    "dask_jobqueue": "dask-jobqueue",
    "nystrom_attention": "nystrom-attention",
    "sksurv": "scikit-survival",
}


class MissingExtraError(WsiMilError, ImportError):
    """A feature whose optional packages are not installed; the message names the extra."""


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` can be imported.

    ``feature`` says what needs it, in words a user recognises (a verb, a method, a model).
    """
    missing = [
        name if name not in PACKAGE_OF else f"{name}, from {PACKAGE_OF[name]}"
        for name in EXTRAS[extra]
        if not _findable(name)
    ]
    if missing:
        raise MissingExtraError(
            f"{feature} needs the optional '{extra}' packages (cannot import "
            f'{"; ".join(missing)}): pip install "wsi-mil[{extra}]"'
        )


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # a module in sys.modules without a spec: importable as it is
        return True
