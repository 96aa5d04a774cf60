"""Prepare the official Camelyon16 download for wsi-mil.

Finds the slides (``normal_NNN``, ``tumor_NNN``, ``test_NNN`` .tif, anywhere under ``--data``)
and the lesion annotations (ASAP XML, loose or inside ``lesion_annotations.zip``, which is
unpacked into ``OUT/annotations``), checks them against the official list, and writes:

* ``OUT/labels.csv``: ``slide_id,label,split`` exactly as ``camelyon16_labels.csv`` (labels
  ``normal``/``tumor``, official ``train``/``test`` split), for the slides present;
* ``OUT/manifest.csv``: the same plus ``slide_path`` and ``annotation_path``;
* ``OUT/prepare_report.json``: counts, and every missing slide or annotation by name.

Test labels come from the reference labels CSV (``--reference``, by default the project's
``camelyon16_labels.csv``) or the download's ``testing/reference.csv``. ``test_049`` is left out:
it duplicates another test slide.

With ``--features`` (a folder of feature bags, after ``run.py`` has tiled and extracted), writes
each bag's tile labels (lesion area fraction per tile; zeros on normal slides).

    python scripts/camelyon16/prepare.py --data /data/CAMELYON16 --out work/camelyon16
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tiling.storage import atomic_output, write_text_atomic

SLIDE_ID = re.compile(r"^(normal|tumor|test)_(\d{3})$", re.IGNORECASE)
#: Left out of every Camelyon16 evaluation: a duplicate of another test slide.
EXCLUDED = ("test_049",)
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_reference() -> Path | None:
    """The project's copy of the official labels, when the shared data is there."""
    root = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = root / "labels" / "camelyon16_labels.csv"
    return path if path.is_file() else None


@dataclass(frozen=True)
class Entry:
    slide_id: str
    label: str
    split: str
    slide_path: Path
    annotation_path: Path | None


def canonical_id(name: str) -> str | None:
    match = SLIDE_ID.match(name)
    return f"{match.group(1).lower()}_{match.group(2)}" if match else None


def find_slides(data: Path) -> dict[str, Path]:
    """Official slide files under ``data`` by canonical id (``tumor_001``)."""
    found: dict[str, Path] = {}
    for path in sorted(data.rglob("*.tif")):
        slide_id = canonical_id(path.stem)  # evaluation masks (Test_001_Mask.tif) do not match
        if slide_id is not None:
            found.setdefault(slide_id, path)
    return found


def find_annotations(data: Path, out: Path) -> dict[str, Path]:
    """Lesion XMLs by slide id: loose files, and members of any ``*.zip`` (unpacked to ``out``)."""
    found: dict[str, Path] = {}
    for path in sorted(data.rglob("*.xml")):
        slide_id = canonical_id(path.stem)
        if slide_id is not None:
            found.setdefault(slide_id, path)
    for archive in sorted(data.rglob("*.zip")):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                name = Path(member).name  # never trust paths inside an archive
                slide_id = canonical_id(Path(name).stem)
                if slide_id is None or not name.lower().endswith(".xml") or slide_id in found:
                    continue
                target = out / "annotations" / f"{slide_id}.xml"
                if not target.is_file():
                    with atomic_output(target) as tmp:
                        tmp.write_bytes(z.read(member))
                found[slide_id] = target
    return found


def read_reference(path: Path) -> dict[str, tuple[str, str]]:
    """slide id -> (label, split) from ``camelyon16_labels.csv`` or the official
    ``reference.csv`` (``Test_001,Tumor,...`` rows without header: split ``test``)."""
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    out: dict[str, tuple[str, str]] = {}
    has_header = rows and rows[0] and rows[0][0].strip().lower() == "slide_id"
    for row in rows[1:] if has_header else rows:
        if len(row) < 2:
            continue
        slide_id = canonical_id(row[0].strip())
        if slide_id is None:
            raise ValueError(f"{path}: {row[0]!r} is not a Camelyon16 slide id")
        label = row[1].strip().lower()
        if label not in ("normal", "tumor"):
            raise ValueError(f"{path}: label {row[1]!r} of {slide_id} is not normal/tumor")
        split = row[2].strip().lower() if has_header and len(row) > 2 else "test"
        out[slide_id] = (label, split)
    return out


def prepare(data: Path, out: Path, reference: Path | None) -> dict:
    """Check the download and write labels, manifest and report; returns the report."""
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: Camelyon16 folder not found")
    slides = find_slides(data)
    annotations = find_annotations(data, out)
    if reference is None:
        candidates = sorted(data.rglob("reference.csv"))
        reference = candidates[0] if candidates else None
    expected = read_reference(reference) if reference is not None else {}
    entries, unlabelled = [], []
    for slide_id, path in sorted(slides.items()):
        if slide_id in EXCLUDED:
            continue
        if slide_id.startswith(("normal", "tumor")):
            label, split = slide_id.split("_")[0], "train"
        elif slide_id in expected:
            label, split = expected[slide_id]
        else:
            unlabelled.append(slide_id)
            continue
        entries.append(Entry(slide_id, label, split, path, annotations.get(slide_id)))
    present = {e.slide_id for e in entries}
    report = {
        "data": str(data),
        "reference": str(reference) if reference else None,
        "train": sum(e.split == "train" for e in entries),
        "test": sum(e.split == "test" for e in entries),
        "tumor": sum(e.label == "tumor" for e in entries),
        "normal": sum(e.label == "normal" for e in entries),
        "missing_slides": sorted(s for s in expected if s not in present and s not in EXCLUDED),
        "tumor_without_annotation": sorted(
            e.slide_id for e in entries if e.label == "tumor" and e.annotation_path is None
        ),
        "test_without_label": unlabelled,
        "excluded": list(EXCLUDED),
    }
    lines = ["slide_id,label,split"] + [f"{e.slide_id},{e.label},{e.split}" for e in entries]
    write_text_atomic(out / "labels.csv", "\n".join(lines) + "\n")
    manifest = ["slide_id,label,split,slide_path,annotation_path"] + [
        f"{e.slide_id},{e.label},{e.split},{e.slide_path},{e.annotation_path or ''}"
        for e in entries
    ]
    write_text_atomic(out / "manifest.csv", "\n".join(manifest) + "\n")
    write_text_atomic(out / "prepare_report.json", json.dumps(report, indent=2) + "\n")
    return report


def read_manifest(path: Path) -> list[Entry]:
    with path.open(newline="", encoding="utf-8") as f:
        return [
            Entry(
                r["slide_id"],
                r["label"],
                r["split"],
                Path(r["slide_path"]),
                Path(r["annotation_path"]) if r["annotation_path"] else None,
            )
            for r in csv.DictReader(f)
        ]


def write_tile_labels(features: Path, manifest: list[Entry], annotations_dir: Path) -> dict:
    """Tile labels for every bag in ``features`` (see :func:`wsi_mil.mil.lesion_labels.label_bags`).

    Annotations are looked up beside each other in ``annotations_dir``, so loose XMLs of the
    download are linked there first."""
    from wsi_mil.mil.lesion_labels import label_bags

    annotations_dir.mkdir(parents=True, exist_ok=True)
    for entry in manifest:
        target = annotations_dir / f"{entry.slide_id}.xml"
        if entry.annotation_path is not None and not target.exists():
            target.symlink_to(entry.annotation_path.resolve())
    result = label_bags(features, annotations_dir, {e.slide_id: e.label for e in manifest})
    return {
        "labelled": len(result.labelled),
        "normal": len(result.normal),
        "unlabelled": result.unlabelled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of the official Camelyon16 download"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--reference",
        type=Path,
        default=default_reference(),
        help="labels CSV with the test labels (default: the project's "
        "camelyon16_labels.csv, else the download's reference.csv)",
    )
    parser.add_argument(
        "--features", type=Path, help="feature bags to write tile labels into (after extraction)"
    )
    args = parser.parse_args(argv)
    report = prepare(args.data, args.out, args.reference)
    print(json.dumps(report, indent=2))
    if args.features is not None:
        labelled = write_tile_labels(
            args.features, read_manifest(args.out / "manifest.csv"), args.out / "annotations"
        )
        print(f"tile labels: {json.dumps(labelled)}")
    return 1 if report["missing_slides"] or report["tumor_without_annotation"] else 0


if __name__ == "__main__":
    sys.exit(main())
