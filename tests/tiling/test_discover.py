"""Finding slides in files and folders, DICOM folders as one slide, and slide ids."""

from __future__ import annotations

import pytest

from tiling.discover import SlideDiscoveryError, check_unique_ids, find_slides, slide_id_for


def test_folder_listing(tmp_path):
    for name in [
        "a.svs",
        "b.ndpi",
        "c.tiff",
        "d.png",
        "notes.txt",
        "x.preview.png",
        "e.svs.tmp",
        ".hidden.svs",
    ]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.mrxs").write_bytes(b"")
    names = [p.name for p in find_slides([tmp_path])]
    assert names == ["a.svs", "b.ndpi", "c.tiff", "d.png"]
    assert [p.name for p in find_slides([tmp_path], recursive=True)][-1] == "f.mrxs"
    # the same slide named twice is listed once
    assert len(find_slides([tmp_path / "a.svs", tmp_path])) == 4


def test_bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"")
    with pytest.raises(SlideDiscoveryError, match="notes.txt"):
        find_slides([tmp_path / "notes.txt"])
    with pytest.raises(SlideDiscoveryError, match="no such"):
        find_slides([tmp_path / "missing"])


def test_dicom_folder_is_one_slide(shared_slide, shared_data):
    folder = shared_slide("fixtures/dicom_boxes")
    assert find_slides([folder]) == [folder]
    assert slide_id_for(folder) == "dicom_boxes"
    slides = find_slides([shared_data / "slides"], recursive=True)
    assert folder in slides
    # a single-file DICOM WSI beside other slides stays a file
    assert shared_data / "slides" / "nonconformant-dicom.dcm" in slides
    assert not any(p.parent == folder for p in slides)


def test_slide_ids_unique(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = tmp_path / "a" / "s.svs", tmp_path / "b" / "s.ndpi"
    assert slide_id_for(one) == "s"
    with pytest.raises(SlideDiscoveryError, match="'s'"):
        check_unique_ids([one, two])
    assert check_unique_ids([one]) == {"s": one}
