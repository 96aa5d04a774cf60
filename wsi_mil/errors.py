"""The one base class of every error a user's input can cause.

An error derived from :class:`WsiMilError` means "the input is wrong, the code is right": the
``wsi-mil`` command prints its message as one line naming the file and what is wrong (exit 2).
Any other exception is a bug (or a broken machine: CUDA, a full disk) and shows its traceback.

Each error also keeps the built-in class it had before this base existed (``ValueError``,
``FileNotFoundError``, ``OSError``, ...) as a second base, so code that catches those still
works. This module imports nothing, so the lowest layer (``tiling``) can use it.
"""

from __future__ import annotations

__all__ = ["InputError", "MissingInputError", "WsiMilError"]


class WsiMilError(Exception):
    """A user-facing error: its message names the file or setting and what is wrong."""


class InputError(WsiMilError, ValueError):
    """A file or value the user gave is not what the stage needs (no more specific class)."""


class MissingInputError(WsiMilError, FileNotFoundError):
    """A file or folder the user named (or an earlier stage should have written) is absent."""
