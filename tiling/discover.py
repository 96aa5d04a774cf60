"""Finding slides among files and folders, and naming them.

A slide is a file with a whole-slide or plain-image extension, or a folder holding the ``.dcm``
files of one DICOM WSI (OpenSlide opens the whole series from any one of its files). The slide
id (file name without extension, or the DICOM folder's name) names every output of the slide,
so two inputs with the same id are an error rather than a silent overwrite.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from wsi_mil.errors import WsiMilError

#: Whole-slide formats OpenSlide reads (Aperio, Hamamatsu, MIRAX, generic TIFF, Leica,
#: Ventana, Philips, DICOM).
WSI_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide", ".dcm"}
)
#: Plain images, opened through OpenSlide's image fallback (small images only).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
SLIDE_EXTENSIONS = WSI_EXTENSIONS | IMAGE_EXTENSIONS
#: Files wsi-mil itself writes next to tiles (previews) or while writing (.tmp), never slides.
_OWN_OUTPUT = re.compile(r"(\.preview\.png|\.tmp)$", re.IGNORECASE)
#: (0020,000E) Series Instance UID, explicit VR little endian: tag, "UI", 2-byte length.
_SERIES_UID_TAG = b"\x20\x00\x0e\x00UI"


class SlideDiscoveryError(WsiMilError, ValueError):
    """An input that is not a slide, or two inputs that would write the same outputs."""


def _is_slide_file(path: Path) -> bool:
    return (
        path.suffix.lower() in SLIDE_EXTENSIONS
        and not path.name.startswith(".")
        and not _OWN_OUTPUT.search(path.name)
        and path.is_file()
    )


def _series_uid(path: Path) -> bytes | None:
    """The DICOM Series Instance UID of a file, from its first 64 KiB (None if not found)."""
    with open(path, "rb") as f:
        head = f.read(65536)
    at = head.find(_SERIES_UID_TAG)
    if at < 0 or at + 8 > len(head):
        return None
    length = int.from_bytes(head[at + 6 : at + 8], "little")
    return head[at + 8 : at + 8 + length].rstrip(b"\x00 ")


def _folder_slides(folder: Path, recursive: bool) -> list[Path]:
    """Slides directly in ``folder`` (and below it if ``recursive``)."""
    entries = sorted(folder.iterdir())
    files = [p for p in entries if _is_slide_file(p)]
    dicom = [p for p in files if p.suffix.lower() == ".dcm"]
    slides = [p for p in files if p.suffix.lower() != ".dcm"]
    if dicom:
        series: dict[bytes, list[Path]] = {}
        for p in dicom:
            series.setdefault(_series_uid(p) or os.fsencode(p.name), []).append(p)
        if len(series) == 1 and len(dicom) > 1 and not slides:
            return [folder]  # the folder is one multi-file DICOM WSI
        slides += [members[0] for members in series.values()]
    if recursive:
        for sub in entries:
            if sub.is_dir() and not sub.name.startswith("."):
                slides += _folder_slides(sub, recursive)
    return sorted(slides)


def find_slides(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Every slide named by ``inputs`` (files or folders), in a stable order, without repeats.

    A file is taken as given (its extension is checked); a folder contributes the slides it holds,
    with its subfolders too when ``recursive``. A folder whose only slides are the ``.dcm``
    files of one series is itself one slide.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += _folder_slides(path, recursive)
        elif path.is_file():
            if path.suffix.lower() not in SLIDE_EXTENSIONS:
                raise SlideDiscoveryError(
                    f"{path}: not a slide (extension {path.suffix or 'none'}; expected one of "
                    f"{', '.join(sorted(SLIDE_EXTENSIONS))})"
                )
            found.append(path)
        else:
            raise SlideDiscoveryError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def slide_id_for(path: str | os.PathLike) -> str:
    """The id naming a slide's outputs: the file name without extension, or the folder name."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def check_unique_ids(slides: Iterable[Path]) -> dict[str, Path]:
    """Map slide id -> slide, failing when two slides share an id (their outputs would clash)."""
    by_id: dict[str, Path] = {}
    for slide in slides:
        slide_id = slide_id_for(slide)
        if slide_id in by_id:
            raise SlideDiscoveryError(
                f"two slides share the id {slide_id!r}: {by_id[slide_id]} and {slide}; rename one "
                f"(outputs are named by slide id)"
            )
        by_id[slide_id] = slide
    return by_id
