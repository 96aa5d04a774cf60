"""prepare.py on a miniature of the official Camelyon16 download layout."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest

from tiling.annotations import read_annotations

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "camelyon16" / "prepare.py"
XML = (
    '<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation Name="A" '
    'Type="Polygon" PartOfGroup="_0"><Coordinates><Coordinate Order="0" X="0" Y="0"/>'
    '<Coordinate Order="1" X="10" Y="0"/><Coordinate Order="2" X="10" Y="10"/>'
    "</Coordinates></Annotation></Annotations></ASAP_Annotations>"
)


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("camelyon16_prepare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture()
def download(tmp_path: Path) -> Path:
    root = tmp_path / "CAMELYON16"
    for rel in (
        "training/normal/normal_001.tif",
        "training/normal/normal_002.tif",
        "training/tumor/tumor_001.tif",
        "training/tumor/tumor_002.tif",
        "testing/images/test_001.tif",
        "testing/images/test_002.tif",
        "testing/images/test_049.tif",
        "testing/images/test_003.tif",
        "testing/evaluation/Test_001_Mask.tif",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    with zipfile.ZipFile(root / "training" / "lesion_annotations.zip", "w") as z:
        z.writestr("lesion_annotations/Tumor_001.xml", XML)
    (root / "testing" / "lesion_annotations").mkdir()
    (root / "testing" / "lesion_annotations" / "test_001.xml").write_text(XML)
    (root / "testing" / "reference.csv").write_text(
        "Test_001,Tumor,Macro,Primary\nTest_002,Normal\nTest_049,Tumor,Micro\nTest_004,Normal\n"
    )
    return root


def test_prepare_writes_labels_manifest_and_report(prepare, download: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    report = prepare.prepare(download, out, reference=None)
    assert (out / "labels.csv").read_text().splitlines() == [
        "slide_id,label,split",
        "normal_001,normal,train",
        "normal_002,normal,train",
        "test_001,tumor,test",
        "test_002,normal,test",
        "tumor_001,tumor,train",
        "tumor_002,tumor,train",
    ]
    assert report["missing_slides"] == ["test_004"]
    assert report["tumor_without_annotation"] == ["tumor_002"]
    assert report["test_without_label"] == ["test_003"]
    manifest = {e.slide_id: e for e in prepare.read_manifest(out / "manifest.csv")}
    unpacked = manifest["tumor_001"].annotation_path
    assert unpacked == out / "annotations" / "tumor_001.xml"
    assert read_annotations(unpacked).lesions.area == pytest.approx(50.0)
    assert manifest["test_001"].annotation_path.name == "test_001.xml"
    assert json.loads((out / "prepare_report.json").read_text())["train"] == 4


def test_reference_in_project_format_and_bad_rows(prepare, download: Path, tmp_path: Path):
    reference = tmp_path / "labels.csv"
    reference.write_text(
        "slide_id,label,split\ntest_001,tumor,test\ntest_002,normal,test\ntest_003,normal,test\n"
    )
    report = prepare.prepare(download, tmp_path / "out", reference)
    assert report["test_without_label"] == [] and report["test"] == 3
    reference.write_text("slide_id,label,split\ntest_001,maybe,test\n")
    with pytest.raises(ValueError, match="maybe"):
        prepare.prepare(download, tmp_path / "out2", reference)
