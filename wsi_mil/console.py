"""Where the library's messages go on a terminal: the ``wsi-mil`` command's logging handler.

The library reports what a stage does through :mod:`logging` (``logging.getLogger(__name__)``
in each module, under the loggers ``wsi_mil``, ``tiling`` and ``features``) and never prints, so
a notebook or a service routes or silences it like any library's output::

    logging.getLogger("wsi_mil").setLevel(logging.WARNING)  # only warnings and errors

The command line installs :class:`ConsoleHandler` on those loggers: the bare message, INFO on
stdout and WARNING and above on stderr (where the same lines were printed before logging), both
through ``tqdm.write`` so a line never breaks a progress bar. The stream is looked up per
message, so ``pytest``'s capture sees the lines. Process pools started by the executors install
it in their workers too (:func:`install` as their initializer) when it is installed here.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

#: the library's top-level loggers (the packages ``wsi_mil``, ``tiling`` and ``features``)
LOGGERS = ("wsi_mil", "tiling", "features")
#: the loggers whose level :func:`install` set (from NOTSET to INFO), reset by :func:`uninstall`
_levels_set: set[str] = set()


class ConsoleHandler(logging.Handler):
    """The bare message: INFO to stdout, WARNING and above to stderr, past any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            tqdm.write(self.format(record), file=stream)
        except Exception:  # noqa: BLE001 - logging's own rule: a handler never raises
            self.handleError(record)


def progress_bar(*args: Any, show: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm progress bar, hidden when ``show`` is false; otherwise tqdm's own settings decide,
    so ``TQDM_DISABLE=1`` hides every bar of the library (tqdm reads its ``TQDM_*`` variables
    only for the arguments a call leaves out, which is why ``disable`` is passed only to hide)."""
    from tqdm import tqdm

    if not show:
        kwargs["disable"] = True
    return tqdm(*args, **kwargs)


def installed() -> bool:
    """Whether the console handler is on the ``wsi_mil`` logger (the command is running)."""
    return any(isinstance(h, ConsoleHandler) for h in logging.getLogger(LOGGERS[0]).handlers)


def install() -> None:
    """Put one :class:`ConsoleHandler` on each library logger and let INFO through (once)."""
    if installed():
        return
    handler = ConsoleHandler()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
            _levels_set.add(name)


def uninstall() -> None:
    """Remove what :func:`install` added (the command returns; tests run it many times)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
            logger.removeHandler(handler)
        if name in _levels_set:
            logger.setLevel(logging.NOTSET)
            _levels_set.discard(name)
